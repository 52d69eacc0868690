"""ADAPTER to the typed runner contract (apps/sandboxing/outcomes.py), until the runner speaks it itself.

TO DELETE, with its one call in ``running.EvaluationRun._on_result`` (and ``started_wall``), once ``RunResult`` has a
``failure`` field: the sandboxing branch makes the runner return ``Outcome``, set ``failure`` on
every ``Outcome.ERROR`` result and tell an engine restart under the run itself. Until then this is
the only place in evaluations that reads the wording of a runner message or asks the Docker engine
anything; from that day the runner's typed result is used as it is (see ``typed``).
"""

from __future__ import annotations

import time

from apps.sandboxing import engine, runner
from apps.sandboxing.outcomes import Failure, Outcome

# How the runner words an engine failure under the run (see runner._execute and Sandbox.create).
_ENGINE_FAULT_PREFIXES = (
    "runner failure",
    "sandbox protocol error",
    "cannot create the sandbox container",
    "the engine could not start the sandbox container",
)
_LAUNCHER_PREFIX = "the launcher failed in the sandbox"


def typed(result, run_id: str, started_wall: float):
    """``result`` with ``outcome`` an ``Outcome`` and ``failure`` set on every error."""
    if hasattr(result, "failure"):
        return result  # the runner speaks the contract
    result.outcome = Outcome(result.outcome)
    result.failure = None
    if (
        result.outcome == Outcome.EXITED
        and result.signal in (9, 15)
        and _engine_lost_the_container(run_id, started_wall)
    ):
        # Killed with its container by an engine stop/restart, not by the program itself.
        result.outcome, result.error = Outcome.ERROR, "the Docker engine restarted under the run"
        result.failure = Failure.ENGINE_FAULT
    elif result.outcome == Outcome.ERROR:
        result.failure = _failure_of(result.error or "")
    return result


def _failure_of(error: str) -> Failure:
    if error.startswith(_ENGINE_FAULT_PREFIXES):
        return Failure.ENGINE_FAULT
    if error.startswith(_LAUNCHER_PREFIX):
        return Failure.LAUNCHER
    return Failure.SETUP_REFUSED


def _engine_lost_the_container(run_id: str, since: float) -> bool:
    """Did the engine restart under this run? Its event log starts empty after a restart, so the
    container's "create" event is missing then."""
    try:
        events = engine.client().api.events(
            since=int(since) - 1,
            until=int(time.time()) + 1,
            filters={"label": [f"{runner.LABEL_RUN}={run_id}"], "event": ["create"]},
            decode=True,
        )
        return not any(True for _ in events)
    except Exception:
        return True  # the engine does not even answer
