"""Prometheus metrics computed at scrape time from PostgreSQL and Redis.

Nothing is counted in process memory: every web and worker process would hold its own counters
(reset on restart, disagreeing with each other). Instead a custom collector reads the record at
each scrape: counters are row counts, histograms are bucket counts computed in SQL, gauges read
Redis. One scrape costs a handful of aggregate queries.
"""

from __future__ import annotations

import logging

import django_rq
from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from rq.suspension import is_suspended

from apps.evaluations import fleet
from apps.evaluations.models import TERMINAL_STATUSES, Evaluation, Status
from apps.monitoring.models import Alert, RunTiming
from apps.sandboxing import engine_runtime, pool
from apps.sessions.models import LIVE_STATUSES, Session

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SANDBOX_START_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


def _histogram_sql(expr: str, table: str, where: str, buckets, group: str | None = None) -> tuple[str, list]:
    """One query: per group, the count of rows with ``expr <= le`` for every bucket, the count and the sum."""
    parts = [f"COUNT(*) FILTER (WHERE {expr} <= %s)" for _ in buckets]
    select = ", ".join(parts)
    group_select = f"{group}, " if group else ""
    sql = (
        f"SELECT {group_select}{select}, COUNT(*), COALESCE(SUM({expr}), 0) FROM {table} "  # noqa: S608 (constants only)
        f"WHERE {where}" + (f" GROUP BY {group}" if group else "")
    )
    return sql, list(buckets)


def _histogram(name: str, documentation: str, rows, buckets, label: str | None = None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label] if label else None)
    for row in rows:
        if label:
            key, row = row[0], row[1:]
        counts, total, total_sum = row[: len(buckets)], row[len(buckets)], row[len(buckets) + 1]
        points = [(str(float(le)), int(c)) for le, c in zip(buckets, counts, strict=True)]
        points.append(("+Inf", int(total)))
        family.add_metric([key] if label else [], points, float(total_sum))
    return family


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
        submitted = CounterMetricFamily(
            "crucible_evaluations_submitted", "Evaluations ever submitted, by language.", labels=["language"]
        )
        for row in Evaluation.objects.values_list("language").order_by().annotate(n=Count("pk")):
            submitted.add_metric([row[0]], row[1])
        yield submitted

        finished = CounterMetricFamily(
            "crucible_evaluations_finished",
            "Evaluations that reached a terminal status, by status and language.",
            labels=["status", "language"],
        )
        for status, language, count in (
            Evaluation.objects.filter(status__in=TERMINAL_STATUSES)
            .values_list("status", "language")
            .order_by()
            .annotate(n=Count("pk"))
        ):
            finished.add_metric([status, language], count)
        yield finished

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

        ended = CounterMetricFamily("crucible_sessions_ended", "Sessions that ended, by reason.", labels=["reason"])
        for reason, count in (
            Session.objects.exclude(status__in=LIVE_STATUSES)
            .values_list("end_reason")
            .order_by()
            .annotate(n=Count("pk"))
        ):
            ended.add_metric([reason or "unknown"], count)
        yield ended

        steps = Session.objects.aggregate(total=Sum("step_count"))["total"] or 0
        yield CounterMetricFamily(
            "crucible_session_steps", "Steps (execs and file operations) recorded in sessions.", steps
        )

    def _histograms(self):
        table = Evaluation._meta.db_table
        with connection.cursor() as cursor:
            sql, params = _histogram_sql(
                "duration_ms / 1000.0",
                table,
                "duration_ms IS NOT NULL AND started_at IS NOT NULL",
                DURATION_BUCKETS,
                group="language",
            )
            cursor.execute(sql, params)
            yield _histogram(
                "crucible_evaluation_duration_seconds",
                "Run time of finished evaluations, by language.",
                cursor.fetchall(),
                DURATION_BUCKETS,
                label="language",
            )
            sql, params = _histogram_sql(
                "EXTRACT(EPOCH FROM (started_at - created_at))",
                table,
                "started_at IS NOT NULL",
                QUEUE_WAIT_BUCKETS,
            )
            cursor.execute(sql, params)
            yield _histogram(
                "crucible_evaluation_queue_wait_seconds",
                "Time from submission to start.",
                cursor.fetchall(),
                QUEUE_WAIT_BUCKETS,
            )
            sql, params = _histogram_sql(
                "sandbox_start_ms / 1000.0",
                RunTiming._meta.db_table,
                "TRUE",
                SANDBOX_START_BUCKETS,
                group="CASE WHEN warm THEN 'warm' ELSE 'cold' END",
            )
            cursor.execute(sql, params)
            yield _histogram(
                "crucible_sandbox_start_seconds",
                "Time until the sandbox was ready: start=cold (create and start a container) or warm (a pool's).",
                cursor.fetchall(),
                SANDBOX_START_BUCKETS,
                label="start",
            )

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
                depth.add_metric([name], django_rq.get_queue(name).count)
            connection_ = django_rq.get_connection("default")
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
