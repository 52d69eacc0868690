"""The default safety rules, seeded by a data migration (operators change them in the admin)."""

from __future__ import annotations

DEFAULT_RULES = [
    {
        "name": "memory-near-limit",
        "kind": "memory_near_limit",
        "threshold": 0.9,
        "severity": "warning",
        "action": "alert",
        "description": "Memory use reached 90% of the evaluation's limit.",
    },
    {
        "name": "fork-bomb",
        "kind": "pids_near_limit",
        "threshold": 0.9,
        "severity": "critical",
        "action": "stop",
        "description": "Processes reached 90% of the pids limit: a fork bomb.",
    },
    {
        "name": "output-flood",
        "kind": "output_flood",
        "threshold": 256 * 1024,
        "duration_s": 5,
        "severity": "warning",
        "action": "alert",
        "description": "More than 256 KiB/s of output for 5 seconds.",
    },
    {
        "name": "cpu-pinned",
        "kind": "cpu_pinned",
        "threshold": 0.95,
        "duration_s": 30,
        "severity": "info",
        "action": "alert",
        "description": "Every CPU sample at 95% or more of the allotted CPUs for 30 seconds.",
    },
    {
        "name": "cloud-metadata",
        "kind": "output_pattern",
        "pattern": r"169\.254\.169\.254|metadata\.google\.internal",
        "severity": "critical",
        "action": "stop",
        "description": "Output mentions the cloud metadata endpoint (an attempt to reach the network).",
    },
    {
        "name": "credential-files",
        "kind": "output_pattern",
        "pattern": r"/etc/shadow|\.aws/credentials|id_rsa\b",
        "severity": "critical",
        "action": "alert",
        "description": "Output mentions credential files.",
    },
    {
        "name": "docker-socket",
        "kind": "output_pattern",
        "pattern": r"docker\.sock",
        "severity": "critical",
        "action": "alert",
        "description": "Output mentions the Docker socket (an escape attempt).",
    },
]


def ensure_default_rules(rule_model) -> None:
    """Create the default rules that do not exist yet (by name); never overwrites an operator's changes."""
    for values in DEFAULT_RULES:
        values = dict(values)
        rule_model.objects.get_or_create(name=values.pop("name"), defaults=values)
