"""GET /api/v1/runtimes/ and submissions in compiled languages, end to end on the real engine."""

from __future__ import annotations

import pytest

from apps.evaluations.models import Reason, Runtime, Status
from apps.evaluations.tests.helpers import run_and_wait
from apps.sandboxing import catalog

URL = "/api/v1/runtimes/"

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


def test_alice_sees_every_enabled_runtime_with_its_version_and_whether_it_can_run(alice_api):
    Runtime.objects.filter(name="go").update(image="crucible-runtime-go:never-built")
    Runtime.objects.filter(name="rust").update(enabled=False)
    listed = {runtime["name"]: runtime for runtime in alice_api.get(URL).json()}
    assert set(catalog.definitions()) - {"rust"} == set(listed)
    assert listed["python"]["available"] and listed["python"]["version"].startswith("Python 3")
    assert listed["python"]["compiled"] is False and listed["python"]["file_name"] == "main.py"
    assert listed["c"] | {"version": None} == {
        "name": "c",
        "version": None,
        "compiled": True,
        "file_name": "main.c",
        "available": True,
        "build_command": None,
    }
    assert listed["c"]["version"][0].isdigit()  # gcc -dumpfullversion, recorded when the image was built
    assert listed["go"]["available"] is False and listed["go"]["version"] is None
    assert listed["go"]["build_command"] == "manage.py build_sandbox_image --runtime go"


def test_the_runtime_list_needs_a_signed_in_user(client):
    assert client.get(URL).status_code in (401, 403)


def test_alices_c_program_compiles_and_runs(alice_api):
    code = '#include <stdio.h>\nint main(void) { char name[16]; scanf("%15s", name); printf("hi %s\\n", name); }\n'
    evaluation = run_and_wait(alice_api, language="c", code=code, stdin="bob\n")
    assert (evaluation.status, evaluation.reason, evaluation.exit_code) == (Status.SUCCEEDED, Reason.EXIT, 0)
    assert b"".join(bytes(chunk.data) for chunk in evaluation.chunks.filter(stream="stdout")) == b"hi bob\n"


def test_a_c_program_that_does_not_compile_fails_with_reason_compile_error_and_the_compilers_words(alice_api):
    evaluation = run_and_wait(alice_api, language="c", code="int main(void) { return nope; }\n")
    assert (evaluation.status, evaluation.reason) == (Status.FAILED, Reason.COMPILE_ERROR)
    stderr = b"".join(bytes(chunk.data) for chunk in evaluation.chunks.filter(stream="stderr"))
    assert b"nope" in stderr and b"error" in stderr
    assert not evaluation.chunks.filter(stream="stdout").exists()
