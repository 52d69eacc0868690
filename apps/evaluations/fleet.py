"""The workers and hosts that take work, as their heartbeats tell it: who is alive, on which host, and
what each host's engine looks like (the report each worker publishes with its heartbeat).

Liveness comes from the heartbeat, not from being listed: a worker is alive while its last RQ
heartbeat is younger than ``WORKER_REGISTRATION_TTL_S``. A worker Redis forgot (restarted empty or
flushed) is missing until its next beat registers it again (``apps.evaluations.worker``).
An engine report older than three probe intervals is not trusted: the probe itself is stuck.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from rq import Worker, worker_registration
from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.utils import as_text, decode_redis_hash, parse_composite_key, utcparse

from apps.evaluations.worker import ENGINE_FIELD
from apps.sandboxing.enginereport import EngineReport
from crucible import redis_clients

log = logging.getLogger(__name__)

EXECUTION_KEY_PREFIX = f"{RQ_KEY_PREFIX}:execution:"  # then an execution's composite key (rq.executions)


@dataclass
class WorkerState:
    name: str
    host: str
    state: str
    queues: str
    job: str
    last_heartbeat: datetime | None
    heartbeat_age_s: float | None
    alive: bool
    engine: EngineReport | None  # None: a worker that reports nothing (not ours), or a stale report


@dataclass
class HostState:
    name: str
    workers: list[WorkerState] = field(default_factory=list)

    @property
    def alive_workers(self) -> list[WorkerState]:
        return [w for w in self.workers if w.alive]

    @property
    def engine(self) -> EngineReport | None:
        """The newest report of a live worker of this host (workers of a host share its engine)."""
        reports = [w.engine for w in self.alive_workers if w.engine is not None]
        return max(reports, key=lambda r: r.checked_at, default=None)

    @property
    def last_heartbeat(self) -> datetime | None:
        return max((w.last_heartbeat for w in self.workers if w.last_heartbeat), default=None)


def report_is_fresh(report: EngineReport, now: float | None = None) -> bool:
    return report.age_s(now) <= 3 * settings.ENGINE_REPORT_S + settings.WORKER_BUSY_BEAT_S


def workers(connection=None) -> list[WorkerState]:
    """Every worker Redis lists, by name, with its liveness and engine report (raises if Redis is down).

    In three round trips whatever the number of workers (the health endpoint asks on every probe):
    the list, then each worker's hash and its running executions in one pipeline, then whether those
    executions still exist. RQ's ``Worker.all`` took four per worker (forty with ten workers, each
    waiting its turn on a busy web process)."""
    connection = connection or redis_clients.rq_connection()
    keys = sorted(as_text(key) for key in connection.smembers(worker_registration.REDIS_WORKER_KEYS))
    if not keys:
        return []
    names = [key[len(Worker.redis_worker_namespace_prefix) :] for key in keys]
    with connection.pipeline(transaction=False) as pipeline:
        for key, name in zip(keys, names, strict=True):
            pipeline.hgetall(key)
            pipeline.smembers(WORKER_EXECUTIONS_KEY_TEMPLATE.format(name))
        answers = pipeline.execute()
    hashes = [decode_redis_hash(raw, decode_values=True) for raw in answers[0::2]]
    running = _running_jobs([[as_text(member) for member in members] for members in answers[1::2]], connection)
    now = datetime.now(UTC)
    return [
        _state(name, data, job, now)
        for name, data, job in zip(names, hashes, running, strict=True)
        if data  # listed, but its hash has expired: a worker that died (RQ drops it from the list)
    ]


def _running_jobs(members: list[list[str]], connection) -> list[str]:
    """Per worker, the job of one of its executions that still exists ("" for none), as RQ's
    ``get_current_job_id`` tells it (an execution's hash expires when its worker stops beating)."""
    wanted = [member for per_worker in members for member in per_worker]
    if not wanted:
        return [""] * len(members)
    with connection.pipeline(transaction=False) as pipeline:
        for member in wanted:
            pipeline.exists(f"{EXECUTION_KEY_PREFIX}{member}")
        alive = {member for member, exists in zip(wanted, pipeline.execute(), strict=True) if exists}
    return [next((parse_composite_key(m)[0] for m in per_worker if m in alive), "") for per_worker in members]


def _engine_report(raw: str | None, now: float) -> EngineReport | None:
    try:
        report = EngineReport.from_dict(json.loads(raw)) if raw else None
    except ValueError:
        return None
    return report if report is not None and report_is_fresh(report, now) else None


def _state(name: str, data: dict[str, str], job: str, now: datetime) -> WorkerState:
    heartbeat = utcparse(data["last_heartbeat"]) if data.get("last_heartbeat") else None
    if heartbeat is not None and heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    age = (now - heartbeat).total_seconds() if heartbeat else None
    return WorkerState(
        name=name,
        host=data.get("hostname") or "?",
        state=data.get("state", "?"),
        queues=", ".join(data["queues"].split(",")) if data.get("queues") else "",
        job=job,
        last_heartbeat=heartbeat,
        heartbeat_age_s=age,
        alive=age is not None and age <= settings.WORKER_REGISTRATION_TTL_S,
        engine=_engine_report(data.get(ENGINE_FIELD), now.timestamp()),
    )


def hosts(states: list[WorkerState]) -> list[HostState]:
    """The workers grouped by the host they run on, by host name."""
    by_name: dict[str, HostState] = {}
    for state in states:
        by_name.setdefault(state.host, HostState(state.host)).workers.append(state)
    return [by_name[name] for name in sorted(by_name)]
