"""Prometheus metrics computed at scrape time from PostgreSQL and Redis.

Nothing is counted in process memory: every web and worker process would hold its own counters
(reset on restart, disagreeing with each other). Instead a custom collector reads the record at
each scrape: counters are row counts, histograms are bucket counts computed in SQL, gauges read
Redis. One scrape costs a handful of aggregate queries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rq.suspension import is_suspended

from apps.console.models import MetricCarry
from apps.evaluations import fleet
from apps.evaluations.models import TERMINAL_STATUSES, Evaluation, Status
from apps.monitoring.models import Alert, RunTiming
from apps.sandboxing import engine_runtime, pool
from apps.sessions.models import LIVE_STATUSES, Session
from crucible import redis_clients

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SANDBOX_START_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


@dataclass(frozen=True)
class HistogramSpec:
    """A histogram computed in SQL over one table: ``expr`` per row, grouped by ``group`` (the label)."""

    name: str
    documentation: str
    expr: str
    table: str
    where: str
    buckets: tuple
    group: str | None = None
    label: str | None = None
    run_column: str = "id"  # the column holding the evaluation's id (the retention policy picks rows by it)

    def sql(self, where: str = "TRUE") -> tuple[str, list]:
        """Per group, the count of rows with ``expr <= le`` for every bucket, the count and the sum."""
        select = ", ".join(f"COUNT(*) FILTER (WHERE {self.expr} <= %s)" for _ in self.buckets)
        group_select = f"{self.group}, " if self.group else ""
        sql = (
            f"SELECT {group_select}{select}, COUNT(*), COALESCE(SUM({self.expr}), 0) FROM {self.table} "  # noqa: S608 (constants only)
            f"WHERE ({self.where}) AND ({where})" + (f" GROUP BY {self.group}" if self.group else "")
        )
        return sql, list(self.buckets)

    def rows(self, where: str = "TRUE", params: list | None = None) -> dict[str, tuple[list[int], int, float]]:
        """{label value ("" without a label): (count per bucket, count, sum)} of the rows ``where`` picks."""
        sql, bucket_params = self.sql(where)
        with connection.cursor() as cursor:
            cursor.execute(sql, [*bucket_params, *(params or [])])
            found = cursor.fetchall()
        result = {}
        n = len(self.buckets)
        for row in found:
            key, row = (row[0], row[1:]) if self.group else ("", row)
            result[key] = ([int(c) for c in row[:n]], int(row[n]), float(row[n + 1]))
        return result

    def carry(self, evaluation_ids: list) -> None:
        """Add what the rows of these evaluations count in this histogram to the carried share (before they go)."""
        for key, (counts, total, total_sum) in self.rows(f"{self.run_column} = ANY(%s)", [evaluation_ids]).items():
            labels = {self.label: key} if self.label else {}
            for le, count in zip(self.buckets, counts, strict=True):
                MetricCarry.add(f"{self.name}:bucket", {**labels, "le": str(float(le))}, count)
            MetricCarry.add(f"{self.name}:count", labels, total)
            MetricCarry.add(f"{self.name}:sum", labels, total_sum)

    def family(self) -> HistogramMetricFamily:
        """The histogram now: the rows kept plus the carried share of the rows pruned."""
        rows = self.rows()
        buckets = MetricCarry.carried(f"{self.name}:bucket")
        counts = MetricCarry.carried(f"{self.name}:count")
        sums = MetricCarry.carried(f"{self.name}:sum")
        keys = set(rows) | {dict(labels).get(self.label or "", "") for labels in counts}
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label] if self.label else None)
        for key in sorted(keys):
            labels = ((self.label, key),) if self.label else ()
            kept, total, total_sum = rows.get(key, ([0] * len(self.buckets), 0, 0.0))
            points = []
            for i, le in enumerate(self.buckets):
                bucket_labels = tuple(sorted((*labels, ("le", str(float(le))))))
                points.append((str(float(le)), kept[i] + int(buckets.get(bucket_labels, 0))))
            points.append(("+Inf", total + int(counts.get(labels, 0))))
            family.add_metric([key] if self.label else [], points, total_sum + sums.get(labels, 0.0))
        return family


HISTOGRAMS = (
    HistogramSpec(
        "crucible_evaluation_duration_seconds",
        "Run time of finished evaluations, by language.",
        "duration_ms / 1000.0",
        Evaluation._meta.db_table,
        "duration_ms IS NOT NULL AND started_at IS NOT NULL",
        DURATION_BUCKETS,
        group="language",
        label="language",
    ),
    HistogramSpec(
        "crucible_evaluation_queue_wait_seconds",
        "Time from submission to start.",
        "EXTRACT(EPOCH FROM (started_at - created_at))",
        Evaluation._meta.db_table,
        "started_at IS NOT NULL",
        QUEUE_WAIT_BUCKETS,
    ),
    HistogramSpec(
        "crucible_sandbox_start_seconds",
        "Time until the sandbox was ready: start=cold (create and start a container) or warm (a pool's).",
        "sandbox_start_ms / 1000.0",
        RunTiming._meta.db_table,
        "TRUE",
        SANDBOX_START_BUCKETS,
        group="CASE WHEN warm THEN 'warm' ELSE 'cold' END",
        label="start",
        run_column="evaluation_id",
    ),
)


# --- Counters computed from rows ---------------------------------------------------------------
# Each counts a queryset by its labels; the retention policy counts with the same function exactly
# the rows it is about to delete and carries the result (MetricCarry), so the scrape adds it back.


def evaluations_submitted(rows) -> dict[tuple, float]:
    return {(language,): n for language, n in rows.values_list("language").order_by().annotate(n=Count("pk"))}


def evaluations_finished(rows) -> dict[tuple, float]:
    return {
        (status, language): n
        for status, language, n in rows.filter(status__in=TERMINAL_STATUSES)
        .values_list("status", "language")
        .order_by()
        .annotate(n=Count("pk"))
    }


def sessions_ended(rows) -> dict[tuple, float]:
    ended = rows.exclude(status__in=LIVE_STATUSES).values_list("end_reason").order_by().annotate(n=Count("pk"))
    counts: dict[tuple, float] = {}
    for reason, n in ended:
        counts[(reason or "unknown",)] = counts.get((reason or "unknown",), 0) + n
    return counts


def session_steps(rows) -> dict[tuple, float]:
    return {(): rows.aggregate(total=Sum("step_count"))["total"] or 0}


@dataclass(frozen=True)
class CounterSpec:
    name: str
    documentation: str
    labels: tuple[str, ...]
    count: Callable[[object], dict[tuple, float]]
    model: type

    def carry(self, rows) -> None:
        """Add what ``rows`` (about to be deleted) count in this counter to its carried share."""
        for values, n in self.count(rows).items():
            MetricCarry.add(self.name, dict(zip(self.labels, values, strict=True)), n)

    def family(self) -> CounterMetricFamily:
        totals = dict(self.count(self.model.objects.all()))
        for pairs, n in MetricCarry.carried(self.name).items():
            values = tuple(dict(pairs).get(label, "") for label in self.labels)
            totals[values] = totals.get(values, 0) + n
        family = CounterMetricFamily(self.name, self.documentation, labels=list(self.labels) or None)
        for values in sorted(totals):
            family.add_metric(list(values), totals[values])
        return family


EVALUATION_COUNTERS = (
    CounterSpec(
        "crucible_evaluations_submitted",
        "Evaluations ever submitted, by language.",
        ("language",),
        evaluations_submitted,
        Evaluation,
    ),
    CounterSpec(
        "crucible_evaluations_finished",
        "Evaluations that reached a terminal status, by status and language.",
        ("status", "language"),
        evaluations_finished,
        Evaluation,
    ),
)
SESSION_COUNTERS = (
    CounterSpec("crucible_sessions_ended", "Sessions that ended, by reason.", ("reason",), sessions_ended, Session),
    CounterSpec(
        "crucible_session_steps",
        "Steps (execs and file operations) recorded in sessions.",
        (),
        session_steps,
        Session,
    ),
)


class CrucibleCollector:
    """A prometheus_client collector: every family is read from the record at scrape time."""

    def collect(self):
        yield from self._evaluations()
        yield from self._sessions()
        yield from self._histograms()
        yield from self._alerts()
        yield from self._redis()
        yield from self._sandbox_runtime()
        yield from self._warm_pools()

    def _warm_pools(self):
        idle = GaugeMetricFamily(
            "crucible_warm_pool_idle", "Idle, started sandboxes in each worker's warm pool.", labels=["worker"]
        )
        try:
            sizes = pool.idle_by_owner()
        except Exception:
            log.warning("metrics: could not count the warm pools", exc_info=True)
            sizes = {}
        for owner, count in sorted(sizes.items()):
            idle.add_metric([owner], count)
        yield idle
        yield GaugeMetricFamily(
            "crucible_warm_pool_size",
            "Idle sandboxes each worker keeps (SANDBOX_POOL_SIZE).",
            value=settings.SANDBOX_POOL_SIZE,
        )

    def _sandbox_runtime(self):
        choice = engine_runtime.describe()
        info = GaugeMetricFamily(
            "crucible_sandbox_runtime",
            "1 for the engine runtime sandboxes get now (configured: SANDBOX_RUNTIME; gvisor: 1 for runsc).",
            labels=["configured", "runtime", "gvisor"],
        )
        info.add_metric([choice.configured, choice.chosen or "unknown", "1" if choice.gvisor else "0"], 1)
        yield info

    def _evaluations(self):
        for counter in EVALUATION_COUNTERS:
            yield counter.family()

        by_status = dict(
            Evaluation.objects.filter(status__in=[Status.QUEUED, Status.RUNNING])
            .values_list("status")
            .order_by()
            .annotate(n=Count("pk"))
        )
        yield GaugeMetricFamily(
            "crucible_evaluations_running", "Evaluations running now.", value=by_status.get(Status.RUNNING, 0)
        )
        yield GaugeMetricFamily(
            "crucible_evaluations_queued", "Evaluations waiting (database).", value=by_status.get(Status.QUEUED, 0)
        )

    def _sessions(self):
        """Sessions now and ever: live ones by status, ended ones by reason, and steps recorded (the sum
        of each session's ``step_count``: one aggregate over the sessions table, not a count of steps)."""
        live = GaugeMetricFamily("crucible_sessions_live", "Sessions live now, by status.", labels=["status"])
        by_status = dict(
            Session.objects.filter(status__in=LIVE_STATUSES).values_list("status").order_by().annotate(n=Count("pk"))
        )
        for status in LIVE_STATUSES:
            live.add_metric([status], by_status.get(status, 0))
        yield live

        for counter in SESSION_COUNTERS:
            yield counter.family()

    def _histograms(self):
        for spec in HISTOGRAMS:
            yield spec.family()

    def _alerts(self):
        alerts = CounterMetricFamily(
            "crucible_alerts", "Alerts raised, by rule and severity.", labels=["rule", "severity"]
        )
        for rule, severity, count in (
            Alert.objects.values_list("rule_name", "severity").order_by().annotate(n=Count("pk"))
        ):
            alerts.add_metric([rule, severity], count)
        yield alerts
        yield GaugeMetricFamily(
            "crucible_alerts_unacknowledged",
            "Alerts no operator has acknowledged yet.",
            value=Alert.objects.unacknowledged().count(),
        )

    def _redis(self):
        depth = GaugeMetricFamily("crucible_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
        up = 1
        try:
            for name in settings.RQ_QUEUES:
                depth.add_metric([name], redis_clients.rq_queue(name).count)
            connection_ = redis_clients.rq_connection()
            states = fleet.workers(connection_)
            suspended = 1 if is_suspended(connection_) else 0
        except Exception:
            log.warning("metrics: Redis is unavailable", exc_info=True)
            up, states, suspended = 0, [], 0
        yield depth
        yield GaugeMetricFamily(
            "crucible_workers",
            "Workers alive (a heartbeat within WORKER_REGISTRATION_TTL_S).",
            value=sum(1 for w in states if w.alive),
        )
        yield from self._hosts(states)
        yield GaugeMetricFamily("crucible_killswitch_engaged", "1 while the kill switch pauses the queues.", suspended)
        yield GaugeMetricFamily("crucible_redis_up", "1 when Redis answered this scrape.", value=up)

    def _hosts(self, states):
        """Per worker host: live workers, whether its engine is healthy, what runs on it, its last beat."""
        families = {
            "workers": GaugeMetricFamily("crucible_host_workers", "Workers alive on each host.", labels=["host"]),
            "engine": GaugeMetricFamily(
                "crucible_host_engine_up",
                "1 when the host's engine answers and has the sandbox image and runtime (its workers' report).",
                labels=["host"],
            ),
            "running": GaugeMetricFamily(
                "crucible_host_sandboxes_running", "Sandboxes running a program on each host.", labels=["host"]
            ),
            "pool": GaugeMetricFamily(
                "crucible_host_warm_pool_idle", "Idle warm-pool sandboxes on each host.", labels=["host"]
            ),
            "beat": GaugeMetricFamily(
                "crucible_host_last_heartbeat_timestamp_seconds",
                "Unix time of the newest heartbeat of the host's workers.",
                labels=["host"],
            ),
        }
        for host in fleet.hosts(states):
            report = host.engine
            families["workers"].add_metric([host.name], len(host.alive_workers))
            families["engine"].add_metric([host.name], 1 if report is not None and report.healthy else 0)
            if report is not None:
                families["running"].add_metric([host.name], report.sandboxes_running)
                families["pool"].add_metric([host.name], report.pool_idle)
            if host.last_heartbeat is not None:
                families["beat"].add_metric([host.name], host.last_heartbeat.timestamp())
        yield from families.values()


def render() -> bytes:
    """The Prometheus text exposition of the current state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CrucibleCollector())
    return generate_latest(registry)
