"""Where the time of one trivial evaluation goes, step by step, under runc and under gVisor (runsc).

Measured in this one process, against the development stack's database, Redis and Docker engine
(no web server, no worker processes needed):
1. the engine: ``Sandbox.create`` (create + start of the locked-down container), delivering and
   running ``print(1)`` in it (``execution.execute``), and ``Sandbox.remove``;
2. the whole run service in-process (``running.run``: claim, heartbeat, recorder, run, record,
   publish) on a fresh queued row: what it costs above the engine is our database and Redis work;
3. RQ's own cost per job, with a job that only touches the database: the forking worker
   (``CrucibleWorker``, a work horse per job) against the same worker running jobs in its own
   process (``CrucibleWorker`` with ``WORKER_FORK=false``), in burst mode on a scratch queue.

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/breakdown.py [--runs 10] [--jobs 50] [--runtimes runc,runsc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import time_calls  # noqa: E402
from tests.stack import django_setup  # noqa: E402

SCRATCH_QUEUE = "bench-breakdown"


def touch_database() -> int:
    """The job RQ runs in part 3: one query, as every run job makes first (in a forked horse: a new connection)."""
    from apps.evaluations.models import Evaluation

    return Evaluation.objects.filter(pk=None).count()


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:6.1f} ms"


def engine_steps(runtime: str, runs: int) -> dict[str, list[float]]:
    """Create+start, deliver+run, remove of a trivial program in the locked-down sandbox."""
    from django.conf import settings

    from apps.evaluations.models import Runtime
    from apps.sandboxing import runner
    from apps.sandboxing.execution import execute
    from apps.sandboxing.policy import Limits
    from apps.sandboxing.sandbox import Sandbox

    settings.SANDBOX_RUNTIME = runtime
    request = runner.RunRequest(
        run_id="bench-breakdown",
        runtime=Runtime.objects.get(name="python").to_sandbox(),
        code=b"print(1)",
        stdin=b"",
        limits=Limits.from_settings(timeout_s=5, memory_mb=128, cpus=1),
    )
    steps: dict[str, list[float]] = {"create+start": [], "deliver+run": [], "remove": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        sandbox = Sandbox.create(runner.profile_for(request), run_id=f"bench-breakdown-{i}")
        t1 = time.perf_counter()
        result = execute(sandbox, request, on_output=lambda *_: None, control=lambda: None)
        t2 = time.perf_counter()
        sandbox.remove()
        t3 = time.perf_counter()
        assert result.exit_code == 0, result
        if i:  # the first is a warm-up
            for name, value in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                steps[name].append(value)
    return steps


def whole_run(runtime: str, runs: int) -> list[float]:
    """``running.run`` on fresh queued rows, in this process (no RQ, no fork)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from apps.evaluations import running
    from apps.evaluations.models import Evaluation, Status
    from apps.evaluations.tests.factories import make_evaluation

    settings.SANDBOX_RUNTIME = runtime
    user, _ = get_user_model().objects.get_or_create(username="bench")
    times = []
    for i in range(runs + 1):
        evaluation = make_evaluation(user, code="print(1)")
        started = time.perf_counter()
        disposition = running.run(str(evaluation.pk))
        elapsed = time.perf_counter() - started
        assert disposition == running.RunDisposition.FINISHED, disposition
        assert Evaluation.objects.get(pk=evaluation.pk).status == Status.SUCCEEDED
        if i:
            times.append(elapsed)
    return times


# What part 2b times inside running.run (inclusive, outermost call of each name per run).
TIMED = {
    "apps.evaluations.running.EvaluationRun": ["claim", "prepare", "conclude", "record"],
    "apps.evaluations.heartbeat.Heartbeat": ["start"],
    "apps.evaluations.recording.OutputRecorder": ["flush_all"],
    "apps.sandboxing.sandbox.Sandbox": [
        "create",
        "open_exec",
        "close_exec",
        "exec_state",
        "read_counters",
        "collect_artifacts",
        "kill",
        "remove",
    ],
    "apps.sandboxing.execution.Execution": ["deliver", "supervise", "conclude", "receive", "sample"],
    "apps.evaluations.publisher": ["publish_status", "publish_end", "publish_sample", "publish_log"],
    "apps.evaluations.controller.Controller": ["__call__"],
}


def timed_steps(runtime: str, runs: int) -> dict[str, list[float]]:
    """``running.run`` as in ``whole_run``, with the time spent in each of ``TIMED`` per run."""

    spent: dict[str, float] = {}

    time_calls(TIMED, spent)
    per_run: dict[str, list[float]] = {}
    for _ in range(runs):
        spent.clear()
        whole_run(runtime, 0)
        for label, value in spent.items():
            per_run.setdefault(label, []).append(value)
    return per_run


def rq_per_job(jobs: int, fork: bool) -> float:
    """Seconds per job of a burst worker over ``jobs`` database-touching jobs on a scratch queue."""
    import django_rq
    from django.conf import settings
    from django.db import connections
    from rq import Queue

    from apps.evaluations.worker import CrucibleWorker

    settings.WORKER_FORK = fork
    queue = Queue(SCRATCH_QUEUE, connection=django_rq.get_connection(next(iter(settings.RQ_QUEUES))))
    queue.empty()
    for _ in range(jobs):
        queue.enqueue(f"{__name__}.touch_database")
    connections.close_all()  # as django-rq's rqworker does: a forked horse must not share the socket
    worker = CrucibleWorker([queue], connection=queue.connection, name=f"bench-breakdown-{fork}-{time.time()}")
    started = time.perf_counter()
    worker.work(burst=True, with_scheduler=False)
    elapsed = time.perf_counter() - started
    assert queue.count == 0 and worker.failed_job_count == 0, (queue.count, worker.failed_job_count)
    connections.close_all()
    return elapsed / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--runtimes", default="runc,runsc", help="engine runtimes to compare, comma-separated")
    parser.add_argument("--steps", action="store_true", help="time the steps inside running.run too")
    parser.add_argument("--jobs-only", action="store_true", help="only RQ's cost per job")
    args = parser.parse_args()
    django_setup()

    for runtime in [] if args.jobs_only else args.runtimes.split(","):
        steps = engine_steps(runtime, args.runs)
        engine_total = [sum(parts) for parts in zip(*steps.values(), strict=True)]
        whole = whole_run(runtime, args.runs)
        print(f"-- {runtime}: one trivial run, median of {args.runs}")
        for name, values in steps.items():
            print(f"engine {name:<14}{median_ms(values)}")
        print(f"engine total         {median_ms(engine_total)}")
        print(f"running.run in-process {median_ms(whole)} (our database and Redis work: the rest)")
        if args.steps:
            print("   inside running.run (inclusive; nested steps are in their callers too):")
            for label, values in timed_steps(runtime, args.runs).items():
                print(f"   {label:<32}{median_ms(values)}  (calls summed per run)")
    forked = rq_per_job(args.jobs, fork=True)
    in_process = rq_per_job(args.jobs, fork=False)
    print(f"-- RQ per job, {args.jobs} jobs that touch the database, one burst worker")
    print(f"work horse forked per job   {forked * 1000:6.1f} ms")
    print(f"job run in the worker       {in_process * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
