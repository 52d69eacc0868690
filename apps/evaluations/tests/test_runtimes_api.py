"""GET /api/v1/runtimes/ and submissions in compiled languages, end to end on the real engine."""

from __future__ import annotations

import pytest

from apps.evaluations.models import Evaluation, Reason, Runtime, Status
from apps.evaluations.tests.helpers import run_and_wait, submit
from apps.sandboxing import catalog

URL = "/api/v1/runtimes/"

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


def test_alice_sees_every_enabled_runtime_with_its_version_and_whether_it_can_run(alice_api):
    Runtime.objects.filter(name="go").update(image="crucible-runtime-go:never-built")
    Runtime.objects.filter(name="rust").update(enabled=False)
    listed = {runtime["name"]: runtime for runtime in alice_api.get(URL).json()}
    assert set(catalog.definitions()) - {"rust"} == set(listed)
    assert listed["python"]["available"]  # its version is SANDBOX_IMAGE's label (images built before labels: null)
    assert listed["python"]["compiled"] is False and listed["python"]["file_name"] == "main.py"
    assert listed["c"] | {"version": None} == {
        "name": "c",
        "version": None,
        "compiled": True,
        "file_name": "main.c",
        "available": True,
        "build_command": None,
        "build": None,  # built by setup, never in the background: no build record
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


def test_alices_program_with_a_helper_file_arguments_and_a_variable_runs_and_is_recorded(alice_api):
    body = {
        "files": {"helper.py": "NAME = 'helper'\n"},
        "args": ["one", "two words"],
        "env": {"MODE": "test"},
    }
    code = "import os, sys, helper\nprint(helper.NAME, sys.argv[1:], os.environ['MODE'])\n"
    evaluation = run_and_wait(alice_api, code=code, **body)
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    stdout = b"".join(bytes(chunk.data) for chunk in evaluation.chunks.filter(stream="stdout"))
    assert stdout == b"helper ['one', 'two words'] test\n"
    detail = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/").json()
    assert {key: detail[key] for key in body} == body


def test_bad_files_args_and_env_are_refused_with_a_400_naming_each_field(alice_api):
    response = submit(
        alice_api,
        files={"../up.py": "x"},
        args="not a list",
        env={"PATH": "/tmp"},
    )
    assert response.status_code == 400
    assert {"files", "args"} <= set(response.json())
    response = submit(alice_api, env={"LD_PRELOAD": "/tmp/x.so"})
    assert response.status_code == 400 and "env" in response.json()
    assert not Evaluation.objects.exists()


def test_code_and_files_together_over_the_code_limit_are_a_413(alice_api, settings):
    settings.SANDBOX_MAX_CODE_BYTES = 1024
    response = submit(alice_api, code="x = 1\n" * 100, files={"big.py": "#" * 1000})
    assert response.status_code == 413


def test_a_web_role_without_an_engine_lists_availability_as_unknown_and_does_not_refuse(alice_api, settings):
    """In a deployment the web role has no engine: it cannot know which images the workers have."""
    from apps.evaluations import runtimes
    from apps.sandboxing import engine

    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    engine.reset()
    runtimes._seen.clear()
    try:
        listed = {runtime["name"]: runtime for runtime in alice_api.get(URL).json()}
        assert (listed["c"]["available"], listed["c"]["build_command"]) == (None, None)
        assert submit(alice_api, language="c", code="int main(void) { return 0; }\n").status_code == 201
    finally:
        engine.reset()
        runtimes._seen.clear()
