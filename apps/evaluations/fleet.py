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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from rq import Worker

from apps.evaluations.worker import ENGINE_FIELD
from apps.sandboxing.enginereport import EngineReport

log = logging.getLogger(__name__)


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
    """Every worker Redis lists, by name, with its liveness and engine report (raises if Redis is down)."""
    connection = connection or django_rq.get_connection("default")
    found = Worker.all(connection=connection)
    reports = _engine_reports(connection, [w.key for w in found])
    now = datetime.now(UTC)
    return [_state(worker, reports.get(worker.key), now) for worker in sorted(found, key=lambda w: w.name)]


def _engine_reports(connection, keys: list[str]) -> dict[str, EngineReport]:
    if not keys:
        return {}
    with connection.pipeline() as pipeline:
        for key in keys:
            pipeline.hget(key, ENGINE_FIELD)
        raw = pipeline.execute()
    reports = {}
    now = time.time()
    for key, value in zip(keys, raw, strict=True):
        try:
            report = EngineReport.from_dict(json.loads(value)) if value else None
        except ValueError:
            report = None
        if report is not None and report_is_fresh(report, now):
            reports[key] = report
    return reports


def _state(worker: Worker, report: EngineReport | None, now: datetime) -> WorkerState:
    heartbeat = worker.last_heartbeat
    if heartbeat is not None and heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=UTC)
    age = (now - heartbeat).total_seconds() if heartbeat else None
    return WorkerState(
        name=worker.name,
        host=worker.hostname or "?",
        state=getattr(worker.get_state(), "value", str(worker.get_state())),
        queues=", ".join(worker.queue_names()),
        job=worker.get_current_job_id() or "",
        last_heartbeat=heartbeat,
        heartbeat_age_s=age,
        alive=age is not None and age <= settings.WORKER_REGISTRATION_TTL_S,
        engine=report,
    )


def hosts(states: list[WorkerState]) -> list[HostState]:
    """The workers grouped by the host they run on, by host name."""
    by_name: dict[str, HostState] = {}
    for state in states:
        by_name.setdefault(state.host, HostState(state.host)).workers.append(state)
    return [by_name[name] for name in sorted(by_name)]
