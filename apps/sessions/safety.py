"""The safety rules on a session, as on a run: its exec output is scanned and its sandbox sampled about
once a second by the host that serves it (``apps.monitoring.safety.SafetyMonitor``). A rule with
action "stop" ends the session ``safety_stopped``; every alert goes to the session's viewers and to
the operators' feed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings

from apps.monitoring.safety import SafetyMonitor
from apps.sandboxing.outcomes import ResourceSample
from apps.sandboxing.policy import host_pids_limit
from apps.sessions import publisher


class SessionSafety:
    def __init__(self, monitor: SafetyMonitor) -> None:
        self.monitor = monitor
        self.cpu_ns: int | None = None
        self.sampled_at = time.monotonic()
        self.viewed_at = 0.0

    @classmethod
    def start(cls, session, profile) -> SessionSafety:
        """The enabled rules as they are now, for ``session`` (a database call: run it on a db thread).

        The pids rule compares the sandbox's task count with the limit on that same count: the
        engine's pids limit. Under runc that is the processes' own limit; under gVisor the count is
        of the host threads gVisor runs the sandbox with (several per process, more under load), so
        its limit is gVisor's host-task limit, not the processes' (enforced inside as RLIMIT_NPROC)."""
        monitor = SafetyMonitor.for_session(
            session.pk,
            memory_mb=session.memory_mb,
            pids_limit=host_pids_limit(profile.limits, profile.engine_runtime),
            cpus=session.cpus,
            on_alert=lambda alert: publisher.publish_alert(session.pk, alert.as_message()),
            owner_id=session.owner_id,
        )
        return cls(monitor)

    @property
    def stop_requested(self) -> bool:
        return self.monitor.stop_requested

    def why(self) -> str:
        stops = [alert for alert in self.monitor.alerts if alert.action == "stop"]
        return f"safety rule {stops[-1].rule_name}: {stops[-1].message}" if stops else "a safety rule fired"

    def output(self, stdout: bytes, stderr: bytes) -> None:
        self.monitor.on_output("stdout", stdout)
        self.monitor.on_output("stderr", stderr)

    def sample(self, sandbox) -> None:
        """Memory, processes and the CPU share since the last sample, through the rules."""
        now = time.monotonic()
        reading = sandbox.read_counters()
        cpu_percent = 0.0
        if reading.cpu_ns is not None and self.cpu_ns is not None:
            cpu_percent = max(0.0, (reading.cpu_ns - self.cpu_ns) / (max(now - self.sampled_at, 1e-3) * 1e9) * 100)
        self.cpu_ns, self.sampled_at = reading.cpu_ns, now
        self.monitor.on_sample(
            ResourceSample(
                at=datetime.now(UTC),
                cpu_percent=round(cpu_percent, 1),
                memory_bytes=reading.memory_bytes or 0,
                pids=reading.pids or 0,
                processes=self.process_names(sandbox, now),
            )
        )

    def process_names(self, sandbox, now: float) -> list[str] | None:
        """The names of the sandbox's processes, every ``SANDBOX_PROCESS_VIEW_EVERY_S`` (None between)."""
        every = settings.SANDBOX_PROCESS_VIEW_EVERY_S
        if every <= 0 or now - self.viewed_at < every:
            return None
        self.viewed_at = now
        return [process.name for process in sandbox.process_view()]
