"""Fault injection: every accepted evaluation reaches exactly one correct terminal status, its output is
complete up to the fault (seq 1..N contiguous, nothing twice) and no container is left behind.

Each test breaks one thing in a private stack (tests/stack.py) while evaluations run.
Settings of the stack: RECONCILE_INTERVAL_S=2, WORKER_LOST_AFTER_S=6, WORKER_HEARTBEAT_S=1,
EVALUATION_MAX_ATTEMPTS=2 (a platform fault is retried once).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.stack import wait_until

pytestmark = pytest.mark.faults

LINES = 30
# 30 lines, one every 0.2 s: about 6 s of streaming output.
STREAMER = f"import time\nfor i in range(1, {LINES + 1}):\n    print(f'line {{i}}', flush=True)\n    time.sleep(0.2)\n"
EXPECTED = b"".join(f"line {i}\n".encode() for i in range(1, LINES + 1))
NOTICE = b"[crucible]"
# Bound on the reconciler's reaction to a dead worker: lost after 6 s, a pass every 2 s, plus slack.
LOST_REACTION_S = 6 + 2 + 3
# Bound on the removal of a SIGKILLed worker's own sandboxes (its warm pool's, one it was starting or
# stopping when it died): Redis forgets the worker after WORKER_REGISTRATION_TTL_S (30 s), then a
# reconciler pass removes them; plus slack.
DEAD_WORKERS_SANDBOXES_S = 30 + 2 + 8


def check_output(stack, evaluation_id, expected=EXPECTED, attempts=None) -> list[bytes]:
    """seq 1..N contiguous; each attempt's stdout a prefix of ``expected``, the last one all of it."""
    chunks = stack.chunks(evaluation_id)
    assert [seq for seq, _, _ in chunks] == list(range(1, len(chunks) + 1)), "seq must be 1..N with no gap"
    segments, current = [], b""
    for _, stream, data in chunks:
        if stream == "stderr" and NOTICE in data:
            segments.append(current)
            current = b""
        elif stream == "stdout":
            current += data
    segments.append(current)
    for partial in segments[:-1]:
        assert expected.startswith(partial), f"an interrupted attempt's output is not a prefix: {partial!r}"
    assert segments[-1] == expected, f"the final attempt's output is incomplete or duplicated: {segments[-1]!r}"
    if attempts is not None:
        assert len(segments) == attempts, f"expected {attempts} attempt(s), output shows {len(segments)}"
    return segments


def outliving_containers(stack) -> list:
    """The stack's containers other than the running, unclaimed sandboxes of its workers' warm pools
    (a claimed one is renamed for its run; a stopped one must be removed by its pool)."""
    return [c for c in stack.containers() if not (c.name.startswith("crucible-pool-") and c.status == "running")]


def no_containers_left(stack, timeout=10):
    began = time.monotonic()
    try:
        wait_until(lambda: not outliving_containers(stack), timeout, interval=0.3, what="no container left")
        print(f"no container left after {time.monotonic() - began:.1f} s")
    except TimeoutError:
        left = [(c.name, c.status, c.labels.get("org.crucible.run", "")) for c in outliving_containers(stack)]
        raise AssertionError(f"containers outlived their runs: {left}") from None


def stays_terminal(stack, evaluation_id, status, for_s=2.5):
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert stack.row(evaluation_id)["status"] == status, "a terminal status changed"
        time.sleep(0.25)


def wait_streaming(stack, evaluation_id, min_chunks=3, timeout=60):
    stack.wait_status(evaluation_id, "running", timeout)
    wait_until(lambda: len(stack.chunks(evaluation_id)) >= min_chunks, timeout, what="output streaming")
    return stack.row(evaluation_id)


def wait_handed_back(stack, evaluation_id, attempt: int, timeout: float) -> dict:
    """Until the run of ``attempt`` was requeued (it may be claimed again at once: attempts grows)."""
    return wait_until(
        lambda: (r := stack.row(evaluation_id))["status"] != "running" or r["attempts"] > attempt,
        timeout,
        what=f"{evaluation_id} handed back after attempt {attempt}",
    )


def audit_actions(stack, evaluation_id) -> list[str]:
    return [action for action, _, _ in stack.audit(evaluation_id)]


def reason_of(stack, evaluation_id) -> str:
    with stack.db.connect() as conn:
        return conn.execute("select reason from evaluations_evaluation where id = %s", (evaluation_id,)).fetchone()[0]


def handed_back_by_the_worker(stack, evaluation_id, attempt: int) -> bool:
    """The worker itself requeued ``attempt`` (the reconciler was not needed): its retry is audited as the
    worker's decision and the notice marks the end of that attempt's output."""
    retries = [d for a, d, _ in stack.audit(evaluation_id) if a == "evaluation.retry" and d.get("attempt") == attempt]
    return any(d.get("decided_by") == "worker" for d in retries)


def test_a_worker_killed_mid_run_is_detected_in_bounded_time_and_the_run_retried_once(fresh):
    stack = fresh
    eid = stack.submit(STREAMER)
    row = wait_streaming(stack, eid)
    worker = stack.worker_for(row["worker"])
    killed_at = time.monotonic()
    stack.kill_worker(worker, signal.SIGKILL)  # the worker and its horse: the machine lost them

    wait_handed_back(stack, eid, 1, LOST_REACTION_S)
    reaction = time.monotonic() - killed_at
    print(f"reconciler reacted to a SIGKILLed worker in {reaction:.1f} s")
    row = stack.wait_terminal(eid, 90)
    assert (row["status"], row["attempts"], row["exit_code"]) == ("succeeded", 2, 0)
    check_output(stack, eid, attempts=2)
    actions = audit_actions(stack, eid)
    assert "evaluation.retry" in actions and "reconciler.worker_lost" in actions
    assert "reconciler.remove_container" in actions  # the dead horse's container
    no_containers_left(stack, timeout=DEAD_WORKERS_SANDBOXES_S)
    stays_terminal(stack, eid, "succeeded")


def test_a_worker_lost_twice_ends_in_error_worker_lost(fresh):
    stack = fresh
    eid = stack.submit(STREAMER)
    for attempt in (1, 2):
        row = wait_streaming(stack, eid, min_chunks=3 if attempt == 1 else len(stack.chunks(eid)) + 2)
        assert row["attempts"] == attempt
        stack.kill_worker(stack.worker_for(row["worker"]), signal.SIGKILL)
        if attempt == 1:
            wait_handed_back(stack, eid, 1, LOST_REACTION_S)
    row = stack.wait_terminal(eid, LOST_REACTION_S)
    assert (row["status"], row["error"], row["attempts"]) == ("error", "worker_lost", 2)
    assert reason_of(stack, eid) == "worker_lost"
    chunks = stack.chunks(eid)
    assert [s for s, _, _ in chunks] == list(range(1, len(chunks) + 1))
    assert "evaluation.platform_fault" in audit_actions(stack, eid)
    no_containers_left(stack, timeout=DEAD_WORKERS_SANDBOXES_S)


def test_a_worker_stopped_with_sigterm_hands_its_run_back_at_once(fresh):
    stack = fresh
    eid = stack.submit(STREAMER)
    row = wait_streaming(stack, eid)
    worker = stack.worker_for(row["worker"])
    process = stack.processes[worker]
    stack.supervise = False
    started = time.monotonic()
    stack.kill_worker(worker, signal.SIGTERM, with_horse=False)  # what a process manager sends
    process.wait(10)
    print(f"worker exited {time.monotonic() - started:.1f} s after SIGTERM")
    assert time.monotonic() - started < 5  # honcho's grace before SIGKILL
    # Handed back by the stopping worker before it exited: attempt 1 is over and requeued (the other
    # worker may have claimed attempt 2 already), not left running for the reconciler to find.
    row = stack.row(eid)
    assert row["status"] == "queued" or row["attempts"] == 2, row
    assert handed_back_by_the_worker(stack, eid, attempt=1), stack.audit(eid)
    stack.supervise = True
    row = stack.wait_terminal(eid, 60)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    segments = check_output(stack, eid, attempts=2)
    assert segments[0], "the first attempt had streamed output before the shutdown"
    notices = [d for _, s, d in stack.chunks(eid) if s == "stderr"]
    assert any(b"worker_shutdown" in d for d in notices)
    no_containers_left(stack)


def test_redis_restarted_and_flushed_while_evaluations_are_queued_and_running(fresh):
    stack = fresh
    ids = [stack.submit(STREAMER) for _ in range(6)]  # two run, four wait

    def two_streaming() -> bool:
        running = [i for i in ids if stack.row(i)["status"] == "running"]
        return len(running) == 2 and all(len(stack.chunks(i)) >= 2 for i in running)

    wait_until(two_streaming, 60, what="two running and streaming output")
    stack.redis.restart(flush=True, down_s=1.0)
    rows = {i: stack.wait_terminal(i, 150) for i in ids}
    for i, row in rows.items():
        assert row["status"] == "succeeded", (i, row)
        check_output(stack, i, attempts=row["attempts"])
    no_containers_left(stack)
    # The stack still accepts and runs work after Redis came back empty.
    eid = stack.submit("print('after')")
    assert stack.wait_terminal(eid, 60)["status"] == "succeeded"
    check_output(stack, eid, expected=b"after\n", attempts=1)


def test_postgresql_restarted_while_a_worker_streams_output(fresh):
    stack = fresh
    code = "import time\nfor i in range(1, 61):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)\n"
    expected = b"".join(f"line {i}\n".encode() for i in range(1, 61))
    eid = stack.submit(code)
    wait_streaming(stack, eid, min_chunks=5)
    stack.db.restart(down_s=1.5)  # every connection is cut mid-stream
    row = stack.wait_terminal(eid, 90)
    # Nothing was lost or repeated, and no retry was needed: the worker waited the outage out.
    assert (row["status"], row["attempts"], row["exit_code"]) == ("succeeded", 1, 0), row
    check_output(stack, eid, expected=expected, attempts=1)
    no_containers_left(stack)
    eid = stack.submit("print('after')")
    assert stack.wait_terminal(eid, 60)["status"] == "succeeded"


@pytest.mark.parametrize("delay_ms", [0, 0, 5, 20, 50, 100, 200, 400])
def test_a_cancel_racing_the_start_ends_cancelled_exactly_once(fresh, delay_ms):
    stack = fresh
    session = stack.session()
    eid = stack.submit("import time\nprint('started', flush=True)\ntime.sleep(20)\n")
    time.sleep(delay_ms / 1000)
    response = session.delete(f"{stack.url}/api/v1/evaluations/{eid}/", timeout=10)
    assert response.status_code == 202, response.text
    row = stack.wait_terminal(eid, 30)
    assert row["status"] == "cancelled", row
    stays_terminal(stack, eid, "cancelled", for_s=3)
    chunks = stack.chunks(eid)
    assert [s for s, _, _ in chunks] == list(range(1, len(chunks) + 1))
    assert b"".join(d for _, s, d in chunks if s == "stdout") in (b"", b"started\n")
    no_containers_left(stack)


@pytest.mark.parametrize("delay_ms", [0, 100, 300, 500, 700, 900, 1200, 1500])
def test_a_stop_racing_the_natural_exit_ends_one_way_exactly_once(fresh, delay_ms):
    stack = fresh
    session = stack.session()
    eid = stack.submit("print('done')")
    time.sleep(delay_ms / 1000)
    response = session.post(f"{stack.url}/api/v1/evaluations/{eid}/stop/", timeout=10)
    assert response.status_code == 202, response.text
    row = stack.wait_terminal(eid, 30)
    assert row["status"] in ("succeeded", "stopped"), row
    if row["status"] == "succeeded":
        assert row["exit_code"] == 0
        check_output(stack, eid, expected=b"done\n", attempts=1)
    stays_terminal(stack, eid, row["status"])
    chunks = stack.chunks(eid)
    assert [s for s, _, _ in chunks] == list(range(1, len(chunks) + 1))
    no_containers_left(stack)


def active_rows(stack) -> list:
    with stack.db.connect() as conn:
        return conn.execute(
            "select id, status from evaluations_evaluation where status in ('queued', 'running')"
        ).fetchall()


def test_nothing_is_left_active_or_running(stack):
    """After all of the above: no evaluation stuck queued/running, no container. Run alone, it makes its
    own work to check (a run, a cancel and a stop), so it never passes on an empty stack."""
    assert active_rows(stack) == []
    session = stack.session()
    done, cancelled, stopped = stack.submit("print('done')"), stack.submit(STREAMER), stack.submit(STREAMER)
    for eid in (cancelled, stopped):
        wait_streaming(stack, eid, min_chunks=1)
    assert session.delete(f"{stack.url}/api/v1/evaluations/{cancelled}/", timeout=10).status_code == 202
    assert session.post(f"{stack.url}/api/v1/evaluations/{stopped}/stop/", timeout=10).status_code == 202
    ends = {eid: stack.wait_terminal(eid, 60)["status"] for eid in (done, cancelled, stopped)}
    assert ends == {done: "succeeded", cancelled: "cancelled", stopped: "stopped"}
    assert [reason_of(stack, eid) for eid in (done, cancelled, stopped)] == ["exit", "cancelled", "stopped"]
    assert active_rows(stack) == []
    no_containers_left(stack)
