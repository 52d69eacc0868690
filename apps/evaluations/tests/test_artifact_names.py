"""Adversarial case 27: a file under /output whose relative path is over 255 bytes.

The rule, end to end (``streams.MAX_NAME_BYTES``): a path of at most 255 bytes and 16 levels is kept;
a longer one is skipped, counted, and reported on stderr as a ``[crucible]`` notice. The run ends by
its own verdict, the program runs once, and no database text reaches the user.
"""

from __future__ import annotations

import subprocess

import pytest
from django.db import DataError

from apps.evaluations.models import Artifact, Evaluation, Reason, Status
from apps.evaluations.running import CRASH_DETAIL
from apps.evaluations.tests.helpers import run_and_wait, running_run
from apps.sandboxing import helper, streams
from apps.sandboxing.outcomes import Outcome, RunResult
from apps.sandboxing.streams import ParsedArtifact

NESTED_300 = """
import os
root = os.environ["CRUCIBLE_OUTPUT_DIR"]
deep = os.path.join(root, *["d" * 49] * 6)  # 6 x 50 = 300 characters below /output
os.makedirs(deep)
open(os.path.join(deep, "long.txt"), "w").write("too long a name")
open(os.path.join(root, "kept.txt"), "w").write("kept")
print("ran", flush=True)
"""

DATABASE_WORDS = ("character varying", "DataError", "value too long", "Traceback", "psycopg")


def output_of(evaluation) -> str:
    return "".join(chunk.text for chunk in evaluation.chunks.order_by("seq"))


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_queues")
def test_a_300_character_nested_path_is_skipped_and_the_run_ends_by_its_own_verdict(alice_api):
    evaluation = run_and_wait(alice_api, code=NESTED_300)
    assert (evaluation.status, evaluation.reason, evaluation.exit_code) == (Status.SUCCEEDED, Reason.EXIT, 0)
    assert evaluation.attempts == 1
    assert evaluation.error == ""
    output = output_of(evaluation)
    assert output.count("ran\n") == 1  # the program ran once
    assert "[crucible] 1 file in /output not kept: a path under /output may have at most 255 bytes" in output
    listing = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/").json()
    assert [artifact["name"] for artifact in listing] == ["kept.txt"]
    detail = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/").content.decode()
    assert not any(word in detail for word in DATABASE_WORDS)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("empty_queues")
def test_a_path_of_exactly_255_bytes_is_kept(alice_api):
    name = "/".join(["e" * 50] * 4) + "/" + "f" * 51  # 4 x 51 + 51 = 255 bytes
    assert len(name.encode()) == streams.MAX_NAME_BYTES
    code = (
        "import os\nroot = os.environ['CRUCIBLE_OUTPUT_DIR']\n"
        f"path = os.path.join(root, {name!r})\nos.makedirs(os.path.dirname(path))\n"
        "open(path, 'w').write('x')\n"
    )
    evaluation = run_and_wait(alice_api, code=code)
    assert evaluation.status == Status.SUCCEEDED, evaluation.error
    assert list(evaluation.artifacts.values_list("name", flat=True)) == [name]
    assert "[crucible]" not in output_of(evaluation)


# --- the worker, given what a broken or hostile collector could report ------------------------


def exited(artifacts, *, skipped_names=0) -> RunResult:
    result = RunResult.not_run(Outcome.EXITED)
    result.exit_code = 0
    result.artifacts = artifacts
    result.artifacts_skipped_names = skipped_names
    result.artifacts_truncated = bool(skipped_names)
    return result


@pytest.mark.django_db
def test_an_artifact_the_database_refuses_is_left_out_never_a_platform_fault(alice):
    run = running_run(alice)
    too_long = ParsedArtifact(name="x" * 300, data=b"refused")
    run.record(exited([ParsedArtifact(name="ok.txt", data=b"ok"), too_long]))
    evaluation = Evaluation.objects.get(pk=run.evaluation.pk)
    assert (evaluation.status, evaluation.reason, evaluation.attempts) == (Status.SUCCEEDED, Reason.EXIT, 1)
    assert evaluation.error == ""
    assert list(Artifact.objects.filter(evaluation=evaluation).values_list("name", flat=True)) == ["ok.txt"]
    assert "[crucible] 1 file in /output not kept" in output_of(evaluation)


@pytest.mark.django_db
def test_the_notice_counts_the_files_the_collector_skipped_and_the_ones_refused(alice):
    run = running_run(alice)
    run.record(exited([ParsedArtifact(name="y" * 300, data=b"")], skipped_names=2))
    assert "[crucible] 3 files in /output not kept" in output_of(run.evaluation)


@pytest.mark.django_db
def test_a_run_with_every_file_kept_gets_no_notice(alice):
    run = running_run(alice)
    run.record(exited([ParsedArtifact(name="a.txt", data=b"a")]))
    assert not run.evaluation.chunks.exists()


@pytest.mark.django_db
def test_a_crash_shows_the_user_no_database_text(alice, settings):
    settings.EVALUATION_MAX_ATTEMPTS = 1
    run = running_run(alice)
    run._hand_over_crash(DataError("value too long for type character varying(255)\nCONTEXT: ..."))
    evaluation = Evaluation.objects.get(pk=run.evaluation.pk)
    assert (evaluation.status, evaluation.reason) == (Status.ERROR, Reason.ENGINE_ERROR)
    assert evaluation.error == CRASH_DETAIL
    assert not any(word in evaluation.error for word in DATABASE_WORDS)


# --- the rule itself: the collector and the host parser agree with the column -----------------


def test_the_collector_the_parser_and_the_column_share_one_bound():
    assert helper.MAX_NAME_BYTES == streams.MAX_NAME_BYTES == Artifact._meta.get_field("name").max_length == 255
    assert helper.MAX_DEPTH + 1 == streams.MAX_DEPTH


@pytest.mark.parametrize(
    "raw",
    [b"a" * 255, "é".encode() * 127, b"\xff" * 255, b"\x01" * 255, ("/".join(["ab"] * 16)).encode()[:255]],
)
def test_a_kept_name_always_fits_the_column(raw):
    name = streams.sanitize_name(raw)
    assert name is not None and len(name) <= 255


@pytest.mark.parametrize("raw", [b"a" * 256, "é".encode() * 128, ("a/" * 128).encode() + b"b"])
def test_a_longer_name_is_refused(raw):
    assert streams.sanitize_name(raw) is None


def test_the_collector_reports_a_long_path_as_skipped_and_keeps_the_rest(compiled_helper, tmp_path):
    deep = tmp_path.joinpath(*["d" * 49] * 6)
    deep.mkdir(parents=True)
    (deep / "long.txt").write_text("x")
    (tmp_path / "kept.txt").write_text("kept")
    parser = streams.ArtifactStreamParser(max_files=10, max_bytes=1000)
    argv = [str(compiled_helper), *helper.collect_argv(str(tmp_path), 10, 1000)[1:]]
    parser.feed(subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout)
    parser.finish()
    assert [artifact.name for artifact in parser.artifacts] == ["kept.txt"]
    assert (parser.done, parser.failed, parser.skipped_names, parser.truncated) == (True, False, 1, True)


def test_a_long_name_in_the_stream_is_skipped_not_a_broken_stream():
    def record(name: bytes, data: bytes) -> bytes:
        return b"F" + helper.RECORD_HEADER.pack(len(name), len(data)) + name + data

    parser = streams.ArtifactStreamParser(max_files=10, max_bytes=1000)
    parser.feed(record(b"n" * 600, b"x") + record(b"after.txt", b"y") + b"E")
    assert [artifact.name for artifact in parser.artifacts] == ["after.txt"]
    assert (parser.done, parser.failed, parser.skipped_names) == (True, False, 1)
