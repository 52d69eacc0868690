"""The backup and restore the README documents: pg_dump --format custom, then pg_restore --clean
--if-exists --no-owner into an empty database, gives back every row, artifacts' bytes included."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
from django.db import connection

from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs the PostgreSQL client"),
]


def url_of(database: str) -> str:
    settings_dict = connection.settings_dict
    netloc = f"{settings_dict['USER']}:{settings_dict['PASSWORD']}@{settings_dict['HOST']}:{settings_dict['PORT']}"
    return urlunparse(("postgresql", netloc, "/" + database, "", "", ""))


@pytest.fixture
def empty_database():
    name = f"restore_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_alices_evaluation_with_its_output_and_artifact_survives_a_dump_and_restore(alice, tmp_path, empty_database):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    add_chunk(evaluation, 1, b"hello\n")
    picture = bytes(range(256)) * 64  # binary, 16 KiB
    add_artifact(evaluation, "plot.png", picture)

    dump = tmp_path / "crucible.dump"
    source = url_of(connection.settings_dict["NAME"])
    with dump.open("wb") as out:
        subprocess.run(["pg_dump", "--format", "custom", "--dbname", source], stdout=out, check=True, timeout=120)
    with dump.open("rb") as dumped:
        subprocess.run(
            ["pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname", url_of(empty_database)],
            stdin=dumped,
            check=True,
            timeout=120,
            capture_output=True,
        )

    with psycopg.connect(url_of(empty_database)) as restored:
        status, code = restored.execute(
            "select status, code from evaluations_evaluation where id = %s", (evaluation.pk,)
        ).fetchone()
        (output,) = restored.execute(
            "select data from evaluations_outputchunk where evaluation_id = %s", (evaluation.pk,)
        ).fetchone()
        data, sha256 = restored.execute(
            "select data, sha256 from evaluations_artifact where evaluation_id = %s", (evaluation.pk,)
        ).fetchone()
        (username,) = restored.execute("select username from auth_user where id = %s", (alice.pk,)).fetchone()
    assert (status, code, bytes(output), username) == ("succeeded", evaluation.code, b"hello\n", "alice")
    assert bytes(data) == picture and sha256 == hashlib.sha256(picture).hexdigest()
    assert urlparse(source).path != "/" + empty_database
