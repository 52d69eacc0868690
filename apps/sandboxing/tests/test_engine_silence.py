"""An engine that stops answering while a program runs is the platform's fault, never the program's end.

Reading "the engine cannot say" as "the program ended, exit code unknown" made an engine restart look
like the program's own exit whenever the run asked in the seconds the engine was down: the run ended
``failed`` and was not run again. The real engine runs the program; the thread's connection to it is
then pointed at a socket nobody listens on, as when the engine goes away.
"""

from __future__ import annotations

import uuid

import docker
import pytest

from apps.sandboxing import engine
from apps.sandboxing.execution import execute
from apps.sandboxing.outcomes import Failure, Outcome, RunRequest
from apps.sandboxing.policy import Profile, runtime_for
from apps.sandboxing.sandbox import Sandbox
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker

WAITS_AFTER_ITS_FIRST_LINE = b"import time\nprint('up', flush=True)\ntime.sleep(60)\n"


@pytest.fixture
def gone_engine(tmp_path):
    version = engine.client().api.api_version  # given, so that making the client asks nothing
    return docker.DockerClient(base_url=f"unix://{tmp_path}/nobody-listens.sock", version=version, timeout=2)


@pytest.mark.parametrize("attach", [True, False], ids=["attached to the main process", "by exec"])
def test_a_program_whose_engine_stops_answering_ends_as_an_engine_fault(attach, gone_engine):
    limits = small_limits(timeout_s=60)
    run_id = f"silence-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox.create(
        Profile(image=runtime_for("python").image, limits=limits), run_id=run_id, attachable=attach
    )
    own_engine = engine.client()

    def engine_goes_after_the_first_line(kind: str, data: bytes) -> None:
        if b"up" in data:
            engine._local.client = gone_engine

    request = RunRequest(
        run_id=run_id, runtime=runtime_for("python"), code=WAITS_AFTER_ITS_FIRST_LINE, stdin=b"", limits=limits
    )
    try:
        result = execute(
            sandbox, request, on_output=engine_goes_after_the_first_line, control=lambda: None, attach=attach
        )
    finally:
        engine._local.client = own_engine
        sandbox.remove()
    assert (result.outcome, result.failure) == (Outcome.ERROR, Failure.ENGINE_FAULT), result
    assert result.failure.transient  # run again on an engine that answers
    assert result.exit_code is None
