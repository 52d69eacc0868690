"""The safety monitor on its own, fed by hand: rule logic, once per rule, bounded pattern window. No Docker."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import UTC, datetime

import pytest

from apps.monitoring import safety
from apps.monitoring.models import Alert, Incident, ResourceSample, SafetyRule
from apps.sandboxing.runner import ResourceSample as RunnerSample

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(safety.time, "monotonic", clock)
    return clock


def monitor_with(*rules, memory_mb=64, pids_limit=64, cpus=1.0) -> safety.SafetyMonitor:
    raised = []
    monitor = safety.SafetyMonitor(
        evaluation_id=uuid.uuid4(),
        memory_limit_bytes=memory_mb * MIB,
        pids_limit=pids_limit,
        cpus=cpus,
        rules=list(rules),
        on_alert=raised.append,
    )
    monitor.raised = raised
    return monitor


def sample(cpu=0.0, memory=0, pids=1) -> RunnerSample:
    return RunnerSample(at=datetime.now(UTC), cpu_percent=cpu, memory_bytes=memory, pids=pids)


def rule(**fields) -> SafetyRule:
    fields.setdefault("severity", "warning")
    fields.setdefault("name", fields["kind"])
    return SafetyRule.objects.create(**fields)


def test_memory_near_its_limit_raises_one_alert_with_evidence(clock):
    monitor = monitor_with(rule(kind="memory_near_limit", threshold=0.5))
    monitor.on_sample(sample(memory=10 * MIB))
    assert monitor.raised == []
    for _ in range(3):
        clock.now += 1
        monitor.on_sample(sample(memory=40 * MIB))
    assert len(monitor.raised) == 1
    alert = monitor.raised[0]
    assert alert.rule_name == "memory_near_limit"
    assert "40.0 MiB of 64 MiB" in alert.evidence
    assert Alert.objects.filter(evaluation_id=monitor.evaluation_id).count() == 1
    assert monitor.stop_requested is False


def test_a_stop_rule_asks_for_a_stop(clock):
    monitor = monitor_with(rule(kind="pids_near_limit", threshold=0.8, action="stop", severity="critical"))
    monitor.on_sample(sample(pids=60))
    assert monitor.stop_requested is True
    assert monitor.raised[0].severity == "critical"


def test_samples_are_stored_with_the_output_rate(clock):
    monitor = monitor_with()
    monitor.on_sample(sample())
    clock.now += 2
    monitor.on_output("stdout", b"x" * 4000)
    row = monitor.on_sample(sample(cpu=50.0, memory=MIB, pids=3))
    assert row.output_bytes_per_s == pytest.approx(2000)
    assert ResourceSample.objects.filter(evaluation_id=monitor.evaluation_id).count() == 2


def test_an_output_flood_must_last_before_it_raises(clock):
    monitor = monitor_with(rule(kind="output_flood", threshold=1000, duration_s=3))
    monitor.on_sample(sample())
    for second in range(1, 6):
        clock.now += 1
        monitor.on_output("stdout", b"y" * 5000)
        monitor.on_sample(sample())
        if second < 3:
            assert monitor.raised == [], second
    assert len(monitor.raised) == 1
    assert "bytes/s" in monitor.raised[0].evidence


def test_a_pause_in_the_flood_starts_the_count_again(clock):
    monitor = monitor_with(rule(kind="output_flood", threshold=1000, duration_s=3))
    monitor.on_sample(sample())
    for burst in (True, True, False, True, True, False):
        clock.now += 1
        if burst:
            monitor.on_output("stdout", b"y" * 5000)
        monitor.on_sample(sample())
    assert monitor.raised == []


def test_cpu_pinned_for_the_whole_run_only_after_its_duration(clock):
    monitor = monitor_with(rule(kind="cpu_pinned", threshold=0.9, duration_s=5), cpus=1.0)
    monitor.on_sample(sample(cpu=0))  # the first sample has no baseline
    for _ in range(4):
        clock.now += 1
        monitor.on_sample(sample(cpu=99))
    assert monitor.raised == []
    clock.now += 1
    monitor.on_sample(sample(cpu=98))
    assert len(monitor.raised) == 1


def test_a_run_that_ever_rested_is_not_cpu_pinned(clock):
    monitor = monitor_with(rule(kind="cpu_pinned", threshold=0.9, duration_s=3))
    monitor.on_sample(sample())
    for cpu in (99, 10, 99, 99, 99, 99):
        clock.now += 1
        monitor.on_sample(sample(cpu=cpu))
    assert monitor.raised == []


def test_a_pattern_split_across_chunks_is_found_and_the_evidence_is_plain_text():
    monitor = monitor_with(rule(kind="output_pattern", pattern=r"/etc/shadow", severity="critical"))
    monitor.on_output("stdout", b"reading /etc/sh")
    assert monitor.raised == []
    monitor.on_output("stdout", b"adow now\x1b[31m\x00")
    assert len(monitor.raised) == 1
    evidence = monitor.raised[0].evidence
    assert "/etc/shadow" in evidence
    assert "\x1b" not in evidence and "\x00" not in evidence


def test_streams_are_searched_separately_and_each_rule_fires_once():
    monitor = monitor_with(
        rule(name="meta", kind="output_pattern", pattern=r"169\.254\.169\.254"),
        rule(name="sock", kind="output_pattern", pattern=r"docker\.sock"),
    )
    monitor.on_output("stdout", b"169.254.")
    monitor.on_output("stderr", b"169.254")
    assert monitor.raised == []
    for _ in range(3):
        monitor.on_output("stderr", b".169.254 and /var/run/docker.sock")
    assert sorted(a.rule_name for a in monitor.raised) == ["meta", "sock"]


def test_memory_stays_bounded_under_a_long_flood_and_a_later_split_pattern_is_still_found():
    monitor = monitor_with(rule(kind="output_pattern", pattern=r"needle"))
    chunk = b"z" * 65536
    monitor.on_output("stdout", chunk)  # the first chunk sets up the decoder and the window
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):  # 12.5 MiB of output, none of it kept
            monitor.on_output("stdout", chunk)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 256 * 1024, f"the monitor kept {kept} bytes of a 12.5 MiB flood"
    monitor.on_output("stdout", b"zzz nee")
    monitor.on_output("stdout", b"dle zzz")
    assert [a.rule_name for a in monitor.raised] == ["output_pattern"]


def test_a_utf8_character_split_across_chunks_still_matches():
    monitor = monitor_with(rule(kind="output_pattern", pattern="sécurité"))
    data = "sécurité".encode()
    monitor.on_output("stdout", data[:2])
    monitor.on_output("stdout", data[2:])
    assert len(monitor.raised) == 1


def test_an_invalid_rule_pattern_is_refused_by_validation():
    from django.core.exceptions import ValidationError

    bad = SafetyRule(name="bad", kind="output_pattern", pattern="(unclosed")
    with pytest.raises(ValidationError):
        bad.full_clean()


def test_a_pattern_alert_shows_the_pattern_as_the_operator_typed_it():
    monitor = monitor_with(rule(name="sock", kind="output_pattern", pattern=r"docker\.sock"))
    monitor.on_output("stdout", b"/var/run/docker.sock")
    assert monitor.raised[0].message == r"output on stdout matched the pattern docker\.sock"


def test_a_process_name_rule_fires_on_a_process_in_the_view_and_keeps_the_counts(clock):
    monitor = monitor_with(rule(name="miner", kind="process_name", pattern=r"^xmrig$", action="stop"))
    clock.now += 1
    row = monitor.on_sample(
        RunnerSample(at=datetime.now(UTC), cpu_percent=0, memory_bytes=0, pids=3, processes=["sh", "xmrig", "sh"])
    )
    assert row.processes == {"sh": 2, "xmrig": 1}
    alert = Alert.objects.get(rule_name="miner")
    assert "xmrig" in alert.message and monitor.stop_requested


def test_a_process_name_rule_ignores_samples_without_a_process_view(clock):
    monitor = monitor_with(rule(name="miner", kind="process_name", pattern=r"xmrig"))
    clock.now += 1
    assert monitor.on_sample(sample(pids=40)).processes is None
    assert not Alert.objects.exists()


def test_a_stop_rule_opens_an_incident_for_the_runs_owner_and_a_later_alert_joins_it(clock, alice):
    monitor = monitor_with(
        rule(name="forks", kind="pids_near_limit", threshold=0.5, action="stop", severity="critical"),
        rule(name="memory", kind="memory_near_limit", threshold=0.5),
    )
    monitor.owner_id = alice.pk
    clock.now += 1
    monitor.on_sample(sample(pids=40))
    incident = Incident.objects.get(evaluation_id=monitor.evaluation_id)
    assert (incident.owner, incident.severity, incident.status) == (alice, "critical", "open")
    clock.now += 1
    monitor.on_sample(sample(memory=40 * MIB, pids=40))
    assert sorted(incident.alerts.values_list("rule_name", flat=True)) == ["forks", "memory"]
    assert list(incident.events.values_list("kind", flat=True)) == ["opened", "alert", "stop_requested", "alert"]


def test_an_alert_rule_alone_opens_no_incident(clock):
    monitor = monitor_with(rule(name="memory", kind="memory_near_limit", threshold=0.5))
    clock.now += 1
    monitor.on_sample(sample(memory=40 * MIB))
    assert Alert.objects.filter(rule_name="memory").exists()
    assert not Incident.objects.exists()


@pytest.fixture
def no_default_rules():
    SafetyRule.objects.update(enabled=False)


def a_run_monitor() -> safety.SafetyMonitor:
    """A run's monitor, reading the enabled rules itself."""
    monitor = safety.SafetyMonitor.for_run(uuid.uuid4(), memory_mb=64, pids_limit=64, cpus=1.0)
    monitor.raised = []
    monitor.on_alert = monitor.raised.append
    return monitor


def test_a_quiet_run_that_is_never_sampled_never_reads_the_rules(no_default_rules, django_assert_num_queries):
    rule(kind="output_pattern", pattern="secret")
    with django_assert_num_queries(0):
        monitor = a_run_monitor()
    assert monitor.raised == []


def test_a_run_reads_the_rules_once_at_its_first_output_and_applies_those_enabled_then(
    no_default_rules, django_assert_num_queries
):
    monitor = a_run_monitor()
    rule(kind="output_pattern", pattern="secret", severity="critical")  # enabled after the start, before any output
    with django_assert_num_queries(1):
        monitor.on_output("stdout", b"hello\n")
    with django_assert_num_queries(0):
        monitor.on_output("stdout", b"and more\n")
    monitor.on_output("stdout", b"the secret\n")
    assert [a.rule_name for a in monitor.raised] == ["output_pattern"]


def test_a_runs_first_sample_reads_the_rules(no_default_rules, clock):
    monitor = a_run_monitor()
    rule(kind="pids_near_limit", threshold=0.8)
    monitor.on_sample(sample(pids=60))
    assert [a.rule_name for a in monitor.raised] == ["pids_near_limit"]


def test_rules_that_cannot_be_read_are_tried_again_a_second_later(clock):
    pattern = rule(kind="output_pattern", pattern="secret")
    answers = [RuntimeError("the database is away"), [pattern]]

    def read():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monitor = monitor_with()
    monitor.rules = read
    monitor.on_output("stdout", b"a secret while the database is away\n")
    clock.now += 0.5
    monitor.on_output("stdout", b"another secret, too soon to ask again\n")
    assert monitor.raised == [] and len(answers) == 1
    clock.now += 0.6
    monitor.on_output("stdout", b"a third secret\n")
    assert [a.rule_name for a in monitor.raised] == ["output_pattern"]
