"""The Crucible provider inside real Inspect runs: the sample lifecycle, and ``inspect eval`` end to end.

Against a real Crucible (Daphne and a session host, tests/stack.py). The eval runs Inspect's own
command line (``inspect eval … --model mockllm/model``) in a subprocess that finds the provider
through the installed ``inspect_ai`` entry point. Its solver and scorer act in the sandbox only
(no model call, nothing from the network): the solver writes a program with ``write_file`` and runs
it with ``exec``; the scorer runs it again, writes the answer to a file, reads it back with
``read_file`` and compares it with the target. One sample's target is wrong on purpose, so the score
is 2/3 only if every sandbox call really happened in the right session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import pytest
from crucible_client import Client
from crucible_client.inspect_provider import CrucibleSandboxConfig, CrucibleSandboxEnvironment
from inspect_ai.util import SandboxUnavailableError

from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

TASK_FILE = """
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import CORRECT, INCORRECT, Score, accuracy, scorer
from inspect_ai.solver import solver
from inspect_ai.util import sandbox

PROGRAM = "import sys\\nprint(int(sys.argv[1]) ** 2)\\n"


@solver
def write_and_run():
    async def solve(state, generate):
        await sandbox().write_file("work/square.py", PROGRAM)
        result = await sandbox().exec(["python3", "work/square.py", state.input_text])
        state.output = ModelOutput.from_content("mockllm/model", result.stdout.strip())
        return state

    return solve


@scorer(metrics=[accuracy()])
def checked_in_the_sandbox():
    async def score(state, target):
        ran = await sandbox().exec(["sh", "-c", "python3 work/square.py \\"$1\\" > answer.txt", "sh", state.input_text])
        assert ran.returncode == 0, ran.stderr
        answer = (await sandbox().read_file("answer.txt")).strip()
        return Score(value=CORRECT if answer == target.text else INCORRECT, answer=answer)

    return score


@task
def squares():
    return Task(
        dataset=[
            Sample(id="seven", input="7", target="49"),
            Sample(id="twelve", input="12", target="144"),
            Sample(id="wrong", input="3", target="10"),
        ],
        solver=write_and_run(),
        scorer=checked_in_the_sandbox(),
        sandbox="crucible",
    )
"""


@pytest.fixture(scope="module")
def ingrid_token(django_db_setup, django_db_blocker):
    """An API token of ingrid (an Inspect user), committed so that the stack's processes see it."""
    from django.contrib.auth import get_user_model

    from apps.accounts.models import ApiToken

    with django_db_blocker.unblock():
        ingrid = get_user_model().objects.create_user("ingrid", "ingrid@example.com", "ingrid-password-1")
        key = ApiToken.issue(ingrid, "inspect")[1]
    yield key
    with django_db_blocker.unblock():
        get_user_model().objects.filter(pk=ingrid.pk).delete()


@pytest.fixture
def ingrid(live_sessions_stack, ingrid_token):  # noqa: F811
    """ingrid's SDK client; after the test none of her sessions may be left running."""
    client = Client(live_sessions_stack.url, ingrid_token)
    yield client
    left = client.sandboxes.list(status="ready", limit=None) + client.sandboxes.list(status="starting", limit=None)
    for sandbox in left:
        client.sandboxes.delete(sandbox["id"])
    assert not left, f"sessions left running: {[s['id'] for s in left]}"


def config_for(client: Client, **fields) -> CrucibleSandboxConfig:
    return CrucibleSandboxConfig(url=client.url, token=client.token, **fields)


async def test_sample_init_starts_a_ready_session_with_the_configs_limits(ingrid):
    environments = await CrucibleSandboxEnvironment.sample_init("limits", config_for(ingrid, memory_mb=256), {})
    environment = environments["default"]
    try:
        session = ingrid.sandboxes.get(environment.sandbox_id)
        assert (session["status"], session["memory_mb"]) == ("ready", 256)
        assert session["metadata"]["inspect_task"] == "limits"
        result = await environment.exec(["sh", "-c", "pwd; id -un"])
        assert result.stdout == "/sandbox\nsandbox\n"
    finally:
        await CrucibleSandboxEnvironment.sample_cleanup("limits", None, environments, False)
    assert ingrid.sandboxes.get(environment.sandbox_id)["end_reason"] == "deleted"


async def test_an_interrupted_sample_still_deletes_its_session(ingrid):
    environments = await CrucibleSandboxEnvironment.sample_init("interrupted", config_for(ingrid), {})
    environment = environments["default"]
    with anyio.CancelScope() as scope:  # the sample is cancelled while its command runs
        scope.cancel()
        await CrucibleSandboxEnvironment.sample_cleanup("interrupted", None, environments, True)
    assert ingrid.sandboxes.get(environment.sandbox_id)["end_reason"] == "deleted"
    with pytest.raises(SandboxUnavailableError, match="has ended"):
        await environment.exec(["true"])


async def test_task_cleanup_deletes_what_sample_cleanup_never_got(ingrid):
    environments = await CrucibleSandboxEnvironment.sample_init("orphans", config_for(ingrid), {})
    session_id = environments["default"].sandbox_id
    await CrucibleSandboxEnvironment.task_cleanup("orphans", None, True)
    assert ingrid.sandboxes.get(session_id)["end_reason"] == "deleted"


async def test_inspect_sandbox_cleanup_deletes_only_what_inspect_started(ingrid, monkeypatch):
    monkeypatch.setenv("CRUCIBLE_URL", ingrid.url)
    monkeypatch.setenv("CRUCIBLE_TOKEN", ingrid.token)
    environments = await CrucibleSandboxEnvironment.sample_init("left-behind", None, {})
    by_hand = ingrid.sandboxes.create(metadata={"purpose": "debugging"})
    await CrucibleSandboxEnvironment.cli_cleanup(None)
    assert ingrid.sandboxes.get(environments["default"].sandbox_id)["end_reason"] == "deleted"
    assert ingrid.sandboxes.get(by_hand["id"])["status"] == "ready"
    await CrucibleSandboxEnvironment.cli_cleanup(by_hand["id"])
    assert ingrid.sandboxes.get(by_hand["id"])["end_reason"] == "deleted"


async def test_a_config_file_names_the_limits(ingrid, tmp_path):
    path = tmp_path / "crucible.json"
    path.write_text(json.dumps({"url": ingrid.url, "token": ingrid.token, "language": "bash", "cpus": 0.5}))
    environments = await CrucibleSandboxEnvironment.sample_init("file", str(path), {})
    try:
        session = ingrid.sandboxes.get(environments["default"].sandbox_id)
        assert (session["language"], session["cpus"]) == ("bash", 0.5)
    finally:
        await CrucibleSandboxEnvironment.sample_cleanup("file", None, environments, False)


async def test_a_wrong_token_fails_the_task_at_its_start_with_one_clear_message(ingrid):
    with pytest.raises(RuntimeError, match="refused the API token .*HTTP 401.*CRUCIBLE_TOKEN"):
        await CrucibleSandboxEnvironment.task_init("squares", CrucibleSandboxConfig(url=ingrid.url, token="cru_wrong"))
    await CrucibleSandboxEnvironment.task_init("squares", config_for(ingrid))


def test_the_token_never_reaches_a_serialised_config():
    config = CrucibleSandboxConfig(url="http://crucible.example", token="cru_secret", memory_mb=512)
    assert "cru_secret" not in config.model_dump_json() and "cru_secret" not in repr(config)


def test_inspect_eval_with_mockllm_scores_what_ran_in_crucible(ingrid, tmp_path):
    task_file = tmp_path / "squares.py"
    task_file.write_text(TASK_FILE)
    env = {
        **os.environ,
        "CRUCIBLE_URL": ingrid.url,
        "CRUCIBLE_TOKEN": ingrid.token,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "INSPECT_LOG_DIR": str(tmp_path / "logs"),
        # Nothing may need the network: any attempt to reach beyond this machine goes to a dead proxy.
        **{
            name: "http://127.0.0.1:9"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
        },
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("PYTHONPATH", None)  # the provider must come from the installed package's entry point
    argv = [sys.executable, "-m", "inspect_ai", "eval", task_file.name, "--model", "mockllm/model"]
    argv += ["--log-format", "json", "--display", "plain", "--max-sandboxes", "2"]
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr

    [log_file] = (tmp_path / "logs").glob("*.json")
    log = json.loads(log_file.read_text())
    assert log["status"] == "success", log.get("error")
    [score] = log["results"]["scores"]
    assert score["metrics"]["accuracy"]["value"] == pytest.approx(2 / 3)
    verdicts = {sample["id"]: sample["scores"]["checked_in_the_sandbox"] for sample in log["samples"]}
    assert {id_: (v["value"], v["answer"]) for id_, v in verdicts.items()} == {
        "seven": ("C", "49"),
        "twelve": ("C", "144"),
        "wrong": ("I", "9"),
    }

    # One session per sample, each deleted at the end, each with the steps the eval took, recorded:
    # first Inspect's own probe for root at sample init (refused: the sandbox cannot switch users).
    sessions = [s for s in ingrid.sandboxes.list(limit=None) if s["metadata"].get("inspect_task") == "squares"]
    assert sorted(s["metadata"]["inspect_sample_id"] for s in sessions) == ["seven", "twelve", "wrong"]
    assert {s["end_reason"] for s in sessions} == {"deleted"}
    for session in sessions:
        probe, *steps = ingrid.sandboxes.iter_transcript(session["id"])
        assert (probe["kind"], probe["user"], probe["error"]) == ("exec", "root", "user_unsupported"), probe
        assert [step["kind"] for step in steps] == ["write_file", "exec", "exec", "read_file"], steps
        number = {"seven": "7", "twelve": "12", "wrong": "3"}[session["metadata"]["inspect_sample_id"]]
        assert steps[1]["cmd"] == ["python3", "work/square.py", number]
        assert steps[0]["path"] == "/sandbox/work/square.py" and steps[3]["path"] == "/sandbox/answer.txt"
