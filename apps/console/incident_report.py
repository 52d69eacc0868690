"""An incident's report: the run's whole record in one document (JSON, Markdown, the HTML page).

It lives in the console (layer 5) because it joins what monitoring keeps (the incident, its alerts
and samples) with what evaluations and sessions keep (the code, its hash, the image, the limits,
the output, the artifacts) and the audit trail. Everything from the sandbox is text here: the
templates escape it, the Markdown puts it in fenced blocks.
"""

from __future__ import annotations

from django.urls import reverse

from apps.audit import services as audit
from apps.evaluations.models import Evaluation, OutputChunk
from apps.monitoring.models import Incident, ResourceSample
from apps.monitoring.safety import printable
from apps.sessions.models import Session

EXCERPT_BYTES = 4096
AROUND_BEFORE_BYTES = 2048  # output before a rule fired kept in its excerpt
AROUND_AFTER_BYTES = 1024  # and after it (until the stop took hold)
AROUND_CHUNKS = 64
SESSION_STEPS = 50  # a session's last steps in its report
AUDIT_ROWS = 200


def report_path(incident_id: int) -> str:
    return reverse("console:incident", args=[incident_id])


def build(incident: Incident) -> dict:
    """The report as a JSON-able dict (what the JSON download is, and what the page and Markdown show)."""
    report = {
        "incident": {
            "id": incident.pk,
            "status": incident.status,
            "severity": incident.severity,
            "summary": incident.summary,
            "actor": incident.actor,
            "opened_at": incident.opened_at.isoformat(),
            "status_comment": incident.status_comment,
            "status_changed_by": incident.status_changed_by.get_username() if incident.status_changed_by else None,
            "quarantined": incident.quarantined,
            "released_at": incident.released_at.isoformat() if incident.released_at else None,
        },
        "timeline": [
            {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail, "internal": e.internal}
            for e in incident.events.all()
        ],
        "rules": [alert.as_message() for alert in incident.alerts.order_by("created_at")],
        "evidence": {k: v for k, v in (incident.evidence or {}).items() if k not in ("samples", "artifacts")},
        "artifacts": (incident.evidence or {}).get("artifacts", []),
        "run": None,
        "samples": (incident.evidence or {}).get("samples", []),
        "output_excerpt": "",
        "output_around": [],
    }
    if incident.evaluation_id:
        _add_evaluation(report, incident)
    elif incident.session_id:
        _add_session(report, incident)
    targets = [f"incident:{incident.pk}", str(incident.evaluation_id or incident.session_id)]
    trail = []
    for target in targets:
        trail += [
            {
                "at": e.created_at.isoformat(),
                "action": e.action,
                "actor": e.actor_name or "system",
                "target": e.target,
                "details": e.details,
            }
            for e in audit.search(target=target)[:AUDIT_ROWS]
        ]
    report["audit"] = sorted(trail, key=lambda row: row["at"])
    return report


def _add_evaluation(report: dict, incident: Incident) -> None:
    evaluation = Evaluation.objects.filter(pk=incident.evaluation_id).select_related("owner").first()
    if evaluation is None:
        return
    report["run"] = {
        "kind": "evaluation",
        "id": str(evaluation.pk),
        "owner": evaluation.owner.get_username(),
        "status": evaluation.status,
        "reason": evaluation.reason,
        "language": evaluation.language,
        "code": evaluation.code,
        "code_sha256": evaluation.code_sha256,
        "image_digest": evaluation.image_digest,
        "runtime": evaluation.sandbox_runtime,
        "limits": {
            "timeout_s": evaluation.timeout_s,
            "memory_mb": evaluation.memory_mb,
            "cpus": evaluation.cpus,
            "pids": evaluation.pids_limit,
            "output_cap_bytes": evaluation.output_cap_bytes,
        },
        "started_at": evaluation.started_at.isoformat() if evaluation.started_at else None,
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }
    samples = ResourceSample.objects.filter(evaluation_id=evaluation.pk).order_by("at")
    if evaluation.finished_at:
        samples = samples.filter(at__lte=evaluation.finished_at)
    report["samples"] = [sample.as_message() for sample in samples[:3600]]
    report["output_excerpt"] = _output_tail(evaluation)
    report["output_around"] = [_output_around(evaluation, alert) for alert in incident.alerts.order_by("created_at")]
    if not report["artifacts"]:
        report["artifacts"] = [
            {"name": a.name, "size": a.size, "sha256": a.sha256} for a in evaluation.artifacts.defer("data")
        ]


def _output_tail(evaluation: Evaluation) -> str:
    """The last output before the stop (the trigger's surroundings; the alerts carry the match itself)."""
    chunks, size = [], 0
    for chunk in OutputChunk.objects.filter(evaluation=evaluation).order_by("-seq").iterator():
        data = bytes(chunk.data)
        chunks.append(f"[{chunk.stream}] " + data.decode("utf-8", "replace"))
        size += len(data)
        if size >= EXCERPT_BYTES:
            break
    text = "".join(reversed(chunks))[-EXCERPT_BYTES:]
    return printable(text.replace("\n", "\x0b"), EXCERPT_BYTES).replace("\ufffd", "\n") if text else ""


def _output_around(evaluation: Evaluation, alert) -> dict:
    """The output written just before a rule fired and just after (until the stop took hold), by the
    time each piece was stored: what surrounded the trigger, for rules on samples as for patterns."""
    chunks = OutputChunk.objects.filter(evaluation=evaluation)
    before = list(chunks.filter(created_at__lte=alert.created_at).order_by("-seq")[:AROUND_CHUNKS])
    after = list(chunks.filter(created_at__gt=alert.created_at).order_by("seq")[:AROUND_CHUNKS])
    return {
        "rule": alert.rule_name,
        "at": alert.created_at.isoformat(),
        "before": _text(reversed(before))[-AROUND_BEFORE_BYTES:],
        "after": _text(after)[:AROUND_AFTER_BYTES],
    }


def _text(chunks) -> str:
    """Output chunks as evidence text (stream-tagged, control characters shown as U+FFFD, lines kept)."""
    text = "".join(f"[{chunk.stream}] " + bytes(chunk.data).decode("utf-8", "replace") for chunk in chunks)
    return printable(text.replace("\n", "\x0b"), len(text)).replace("\ufffd", "\n") if text else ""


def _add_session(report: dict, incident: Incident) -> None:
    session = Session.objects.filter(pk=incident.session_id).select_related("owner").first()
    if session is None:
        return
    steps = list(session.steps.order_by("-seq")[:SESSION_STEPS][::-1])
    report["run"] = {
        "kind": "session",
        "id": str(session.pk),
        "owner": session.owner.get_username(),
        "status": session.status,
        "reason": session.end_reason,
        "language": session.language,
        "image": session.image,
        "image_digest": session.image_digest,
        "runtime": session.sandbox_runtime,
        "limits": {
            "memory_mb": session.memory_mb,
            "cpus": session.cpus,
            "idle_timeout_s": session.idle_timeout_s,
            "max_lifetime_s": session.max_lifetime_s,
        },
        # What ran in it: the session's steps (its "code"), the last ones.
        "code": "\n".join(_step_line(step) for step in steps),
        "started_at": session.created_at.isoformat(),
        "finished_at": session.ended_at.isoformat() if session.ended_at else None,
    }
    report["output_excerpt"] = _steps_text(steps)[-EXCERPT_BYTES:]
    report["output_around"] = [_steps_around(steps, alert) for alert in incident.alerts.order_by("created_at")]


def _step_line(step) -> str:
    what = " ".join(str(part) for part in step.cmd) if step.cmd else f"{step.kind} {step.path}"
    return printable(f"#{step.seq} {step.kind}: {what} (exit {step.returncode})", 500)


def _steps_text(steps) -> str:
    text = "".join(f"[#{step.seq} stdout] {step.stdout}[#{step.seq} stderr] {step.stderr}" for step in steps)
    return printable(text.replace("\n", "\x0b"), len(text)).replace("\ufffd", "\n") if text else ""


def _steps_around(steps, alert) -> dict:
    """A session's output around a rule that fired: the steps begun before it, and those after."""
    before = [step for step in steps if step.started_at <= alert.created_at]
    after = [step for step in steps if step.started_at > alert.created_at]
    return {
        "rule": alert.rule_name,
        "at": alert.created_at.isoformat(),
        "before": _steps_text(before)[-AROUND_BEFORE_BYTES:],
        "after": _steps_text(after)[:AROUND_AFTER_BYTES],
    }


def markdown(report: dict) -> str:
    """The report as Markdown: sandbox text only inside fenced blocks."""
    inc, run = report["incident"], report["run"] or {}
    lines = [
        f"# Incident {inc['id']}: {inc['severity']} ({inc['status']})",
        "",
        f"- Opened: {inc['opened_at']} by {inc['actor']}",
        f"- Summary: {inc['summary']}",
        f"- Quarantined: {'yes' if inc['quarantined'] else 'no'}",
        "",
        "## Run",
        "",
    ]
    keys = ("kind", "id", "owner", "status", "reason", "language", "code_sha256", "image", "image_digest", "runtime")
    for key in keys:
        if key in run:
            lines.append(f"- {key}: {run[key]}")
    if run.get("limits"):
        lines.append(f"- limits: {', '.join(f'{k}={v}' for k, v in run['limits'].items())}")
    if "code" in run:
        lines += ["", "```", _fence(run["code"]), "```"]
    lines += ["", "## Timeline", "", "| at | what | who | detail |", "|---|---|---|---|"]
    lines += [f"| {e['at']} | {e['kind']} | {_cell(e['actor'])} | {_cell(e['detail'])} |" for e in report["timeline"]]
    lines += ["", "## Rules that fired", ""]
    for alert in report["rules"]:
        lines += [f"- **{alert['rule']}** ({alert['severity']}, {alert['action']}): {_cell(alert['message'])}"]
        lines += ["", "```", _fence(alert["evidence"]), "```"]
    lines += ["", "## Resource samples up to the stop", "", "| at | cpu % | memory MiB | pids | processes |"]
    lines += ["|---|---|---|---|---|"]
    for s in report["samples"]:
        procs = ", ".join(f"{n}×{c}" for n, c in (s.get("processes") or {}).items())
        lines.append(
            f"| {s['at']} | {s['cpu_percent']} | {s['memory_bytes'] / 2**20:.1f} | {s['pids']} | {_cell(procs)} |"
        )
    for around in report.get("output_around", []):
        lines += ["", f"## Output around rule {_cell(around['rule'])} ({around['at']})", "", "Before:", ""]
        lines += ["```", _fence(around["before"]), "```", "", "After:", "", "```", _fence(around["after"]), "```"]
    lines += ["", "## Output before the stop", "", "```", _fence(report["output_excerpt"]), "```"]
    lines += ["", "## Artifacts", "", "| name | size | sha256 |", "|---|---|---|"]
    lines += [f"| {_cell(a['name'])} | {a['size']} | {a['sha256']} |" for a in report["artifacts"]]
    lines += ["", "## Evidence step", "", "```", _fence(str(report["evidence"])), "```"]
    lines += ["", "## Audit trail", "", "| at | action | actor | target |", "|---|---|---|---|"]
    lines += [f"| {a['at']} | {a['action']} | {_cell(a['actor'])} | {_cell(a['target'])} |" for a in report["audit"]]
    return "\n".join(lines) + "\n"


def _fence(text: str) -> str:
    return (text or "").replace("```", "`\u200b``")


def _cell(text: str) -> str:
    return printable(str(text), 300).replace("|", "\\|").replace("\n", " ")
