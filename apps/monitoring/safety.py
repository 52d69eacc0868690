"""The safety monitor: one per run, fed by the runner's samples and output, raising alerts once per rule.

It runs on the worker's run loop, so everything here is cheap and bounded: rules are read once, when
the run first needs them (its first output or resource sample: a short quiet run, as most batch
samples are, never reads them), pattern rules search a sliding window (the tail of each stream plus
the new piece, never the whole output), and nothing here may raise into the run (errors are logged).

What happens when a rule fires is the caller's business (``on_alert``): ``apps.evaluations.running``
publishes the alert on the evaluation's WebSocket group and, for rules with action "stop", asks for
a safety stop. ``stop_requested`` is also set here so the run's controller can answer at once.
"""

from __future__ import annotations

import codecs
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from apps.monitoring import alerts, incidents
from apps.monitoring.models import Alert, ResourceSample, RuleAction, RuleKind, SafetyRule

log = logging.getLogger(__name__)

WINDOW_CHARS = 4096  # how much of each stream's tail a pattern may span into
EVIDENCE_CHARS = 200
MIB = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


RECENT_SAMPLES = 120
RULES_READ_RETRY_S = 1.0
PROCESS_NAMES_KEPT = 50


def process_counts(names: list[str] | None) -> dict[str, int] | None:
    """The process view of a sample as how many processes of each name (the most common first, bounded)."""
    if names is None:
        return None
    return dict(Counter(printable(name, 32) for name in names).most_common(PROCESS_NAMES_KEPT))


def printable(text: str, limit: int = 500) -> str:
    """Sandbox output as plain evidence text: control characters shown as U+FFFD, bounded."""
    return _CONTROL.sub("\ufffd", text)[:limit]


def enabled_rules() -> list[SafetyRule]:
    return list(SafetyRule.objects.filter(enabled=True))


@dataclass
class _Rule:
    row: SafetyRule
    regex: re.Pattern | None = None


@dataclass
class SafetyMonitor:
    evaluation_id: object
    memory_limit_bytes: int
    pids_limit: int
    cpus: float
    rules: list[SafetyRule] | Callable[[], list[SafetyRule]]  # the rules, or how to read them when needed
    on_alert: Callable[[Alert], None] | None = None
    store_samples: bool = True
    stop_requested: bool = False
    fired: set[str] = field(default_factory=set)
    alerts: list[Alert] = field(default_factory=list)
    session_id: object = None  # set (and evaluation_id None) when it watches an agent session
    owner_id: object = None  # the run's owner: a stop rule opens an incident they can see

    def __post_init__(self) -> None:
        self._rules: list[_Rule] | None = None  # compiled from ``rules`` when first needed
        self._patterns: list[_Rule] = []
        self._read_again_at = 0.0  # after rules could not be read: not before this (monotonic)
        self.recent: deque[dict] = deque(maxlen=RECENT_SAMPLES)  # the last samples, for an incident's record
        self._decoders = {}
        self._tails: dict[str, str] = {}
        self._bytes_since_sample = 0
        self._last_sample_mono = time.monotonic()
        self._first_sample_mono: float | None = None
        self._samples_seen = 0
        self._cpu_always_pinned = True
        self._flood_since: float | None = None

    @classmethod
    def for_run(
        cls, evaluation_id, *, memory_mb: int, pids_limit: int, cpus: float, on_alert=None, owner_id=None
    ) -> SafetyMonitor:
        """A monitor with the enabled rules as they are when the run first needs them."""
        return cls(
            evaluation_id=evaluation_id,
            memory_limit_bytes=int(memory_mb) * MIB,
            pids_limit=int(pids_limit),
            cpus=float(cpus),
            rules=enabled_rules,
            on_alert=on_alert,
            owner_id=owner_id,
        )

    @classmethod
    def for_session(
        cls, session_id, *, memory_mb: int, pids_limit: int, cpus: float, on_alert=None, owner_id=None
    ) -> SafetyMonitor:
        """A monitor of an agent session (apps.sessions): the same rules; its samples are not stored
        (``ResourceSample`` rows are an evaluation's)."""
        return cls(
            evaluation_id=None,
            session_id=session_id,
            memory_limit_bytes=int(memory_mb) * MIB,
            pids_limit=int(pids_limit),
            cpus=float(cpus),
            rules=enabled_rules(),  # read now: a session's host calls this on a database thread
            on_alert=on_alert,
            store_samples=False,
            owner_id=owner_id,
        )

    def _ready(self) -> bool:
        """Read and compile the rules unless done; False while they cannot be read (the database is
        away: tried again a second later; no rule could raise its alert then anyway)."""
        if self._rules is not None:
            return True
        if time.monotonic() < self._read_again_at:
            return False
        try:
            rows = self.rules() if callable(self.rules) else self.rules
        except Exception:
            log.warning("safety monitor: rules not read for %s; trying again", self.evaluation_id, exc_info=True)
            self._read_again_at = time.monotonic() + RULES_READ_RETRY_S
            return False
        compiled = []
        for rule in rows:
            regex = None
            if rule.kind in (RuleKind.OUTPUT_PATTERN, RuleKind.PROCESS_NAME):
                try:
                    regex = re.compile(rule.pattern)
                except re.error:
                    log.error("safety rule %s has an invalid pattern; skipped", rule.name)
                    continue
            compiled.append(_Rule(rule, regex))
        self._patterns = [r for r in compiled if r.regex is not None and r.row.kind == RuleKind.OUTPUT_PATTERN]
        self._rules = compiled
        return True

    # --- feeding ---------------------------------------------------------------------------

    def on_output(self, stream: str, data: bytes) -> None:
        self._bytes_since_sample += len(data)
        if not self._ready() or not self._patterns:
            return
        try:
            self._scan(stream, data)
        except Exception:
            log.exception("safety monitor: output scan failed for %s", self.evaluation_id)

    def on_sample(self, sample) -> ResourceSample:
        """Take a runner sample: derive the output rate, store it, run the sample rules. Returns the row."""
        now = time.monotonic()
        elapsed = max(now - self._last_sample_mono, 1e-3)
        rate = self._bytes_since_sample / elapsed
        previous = self._last_sample_mono
        self._bytes_since_sample, self._last_sample_mono = 0, now
        row = ResourceSample(
            evaluation_id=self.evaluation_id,
            at=sample.at,
            cpu_percent=float(sample.cpu_percent),
            memory_bytes=int(sample.memory_bytes),
            pids=int(sample.pids),
            output_bytes_per_s=rate,
            processes=process_counts(getattr(sample, "processes", None)),
        )
        self.recent.append(row.as_message())
        if self.store_samples:
            try:
                row.save()
            except Exception:
                log.exception("safety monitor: could not store a sample for %s", self.evaluation_id)
        try:
            if self._ready():
                self._check_sample(row, now, previous)
        except Exception:
            log.exception("safety monitor: sample rules failed for %s", self.evaluation_id)
        return row

    # --- rules -----------------------------------------------------------------------------

    def _scan(self, stream: str, data: bytes) -> None:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = self._tails.get(stream, "") + decoder.decode(data)
        for rule in self._patterns:
            if rule.row.name in self.fired:
                continue
            match = rule.regex.search(text)
            if match:
                start = max(0, match.start() - EVIDENCE_CHARS // 2)
                evidence = text[start : match.end() + EVIDENCE_CHARS // 2]
                self._fire(
                    rule.row,
                    f"output on {stream} matched the pattern {rule.row.pattern}",  # as typed: no repr's escapes
                    f"{stream}: …{printable(evidence)}…",
                )
        self._tails[stream] = text[-WINDOW_CHARS:]

    def _check_sample(self, sample: ResourceSample, now: float, previous: float) -> None:
        self._samples_seen += 1
        if self._first_sample_mono is None:
            self._first_sample_mono = now
        for rule in self._rules:
            row = rule.row
            if row.name in self.fired:
                continue
            kind = row.kind
            if kind == RuleKind.MEMORY_NEAR_LIMIT and self.memory_limit_bytes:
                used = sample.memory_bytes / self.memory_limit_bytes
                if used >= row.threshold:
                    self._fire(
                        row,
                        f"memory at {used:.0%} of its limit",
                        f"memory {sample.memory_bytes / MIB:.1f} MiB of {self.memory_limit_bytes / MIB:.0f} MiB "
                        f"(threshold {row.threshold:.0%})",
                    )
            elif kind == RuleKind.PIDS_NEAR_LIMIT and self.pids_limit:
                if sample.pids >= row.threshold * self.pids_limit:
                    self._fire(
                        row,
                        f"{sample.pids} processes, near the limit of {self.pids_limit} (fork bomb?)",
                        f"pids {sample.pids} of {self.pids_limit} (threshold {row.threshold:.0%})",
                    )
            elif kind == RuleKind.OUTPUT_FLOOD:
                self._check_flood(row, sample, now, previous)
            elif kind == RuleKind.CPU_PINNED:
                self._check_cpu(row, sample, now)
            elif kind == RuleKind.PROCESS_NAME and sample.processes and rule.regex is not None:
                self._check_processes(rule, sample.processes)

    def _check_processes(self, rule: _Rule, processes: dict[str, int]) -> None:
        """A process-name rule: any process in the sandbox's view whose name matches the pattern."""
        for name, count in processes.items():
            if rule.regex.search(name):
                self._fire(
                    rule.row,
                    f"a process named {printable(name, 40)!r} runs in the sandbox",
                    f"process view: {count} × {printable(name, 40)!r} (pattern {rule.row.pattern!r})",
                )
                return

    def _check_flood(self, row: SafetyRule, sample: ResourceSample, now: float, previous: float) -> None:
        if sample.output_bytes_per_s < row.threshold:
            self._flood_since = None
            return
        if self._flood_since is None:
            self._flood_since = previous  # the rate covers the whole interval since the previous sample
        if now - self._flood_since >= row.duration_s:
            self._fire(
                row,
                f"output flood: {sample.output_bytes_per_s / 1024:.0f} KiB/s for {now - self._flood_since:.0f} s",
                f"{sample.output_bytes_per_s:.0f} bytes/s for {now - self._flood_since:.1f} s "
                f"(threshold {row.threshold:.0f} bytes/s for {row.duration_s:g} s)",
            )

    def _check_cpu(self, row: SafetyRule, sample: ResourceSample, now: float) -> None:
        if self._samples_seen == 1:
            return  # the first sample has no CPU baseline (always 0 %)
        pinned_at = row.threshold * self.cpus * 100
        if sample.cpu_percent < pinned_at:
            self._cpu_always_pinned = False
        if self._cpu_always_pinned and now - self._first_sample_mono >= max(row.duration_s, 1.0):
            self._fire(
                row,
                f"CPU pinned at {sample.cpu_percent:.0f}% for the whole run ({now - self._first_sample_mono:.0f} s)",
                f"every sample ≥ {pinned_at:.0f}% of one CPU since the start; latest {sample.cpu_percent:.0f}%",
            )

    def _incident(self, alert: Alert) -> None:
        """A stop rule opens (or joins) the run's incident; any other alert joins one that is open."""
        try:
            if alert.action == RuleAction.STOP:
                incidents.open_for_stop_rule(alert, owner_id=self.owner_id)
            else:
                incidents.note_alert(alert)
        except Exception:
            log.exception("safety monitor: could not record the incident of %s", self.evaluation_id or self.session_id)

    def _fire(self, rule: SafetyRule, message: str, evidence: str) -> None:
        self.fired.add(rule.name)
        alert = alerts.raise_alert(
            evaluation_id=self.evaluation_id,
            session_id=self.session_id,
            rule=rule,
            rule_name=rule.name,
            kind=rule.kind,
            severity=rule.severity,
            action=rule.action,
            message=message,
            evidence=evidence,
        )
        if rule.action == RuleAction.STOP:
            self.stop_requested = True
        if alert is None:
            return  # raised before (a retried run)
        self._incident(alert)
        self.alerts.append(alert)
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:
                log.exception("safety monitor: on_alert failed for %s", self.evaluation_id)
