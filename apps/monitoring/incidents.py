"""Safety incidents: open or update one per run or session, keep its timeline and evidence, work it.

Evaluations and sessions (layer 3) call these when a rule with action "stop" fires, on an emergency
stop and on the kill switch; the runner's evidence (``sandboxing.outcomes.Evidence``) is recorded
with ``record_evidence``. While an incident is active (open or acknowledged) and not released, the
run's artifacts and the session's files are quarantined (``quarantine_of``): the owner gets a 403,
an operator downloads only explicitly, and each such download is audited here.
"""

from __future__ import annotations

import logging

from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from apps.audit import services as audit
from apps.monitoring.models import (
    SEVERITY_RANK,
    Alert,
    EventKind,
    Incident,
    IncidentEvent,
    IncidentFile,
    IncidentStatus,
)

log = logging.getLogger(__name__)

QUARANTINE_MESSAGE = (
    "This run's artifacts are quarantined while its safety incident is under review; an operator can release them."
)
SESSION_QUARANTINE_MESSAGE = (
    "This session's files are quarantined while its safety incident is under review; an operator can release them."
)


# How the runner froze a sandbox (``sandboxing.outcomes.Evidence.frozen_by``), for the timeline.
FROZEN_BY = {"pause": "the engine's pause", "sigstop": "SIGSTOP to every process inside"}


def actor_name(actor) -> str:
    """A user's name, or what acted when no user did (a rule, the kill switch, the system)."""
    if actor is None:
        return "the system"
    if isinstance(actor, str):
        return actor
    return actor.get_username() if getattr(actor, "is_authenticated", False) else "the system"


def _run_filter(evaluation_id=None, session_id=None) -> dict:
    if (evaluation_id is None) == (session_id is None):
        raise ValueError("an incident belongs to exactly one evaluation or one session")
    return {"evaluation_id": evaluation_id} if evaluation_id is not None else {"session_id": session_id}


def for_run(*, evaluation_id=None, session_id=None) -> Incident | None:
    return Incident.objects.filter(**_run_filter(evaluation_id, session_id)).first()


def open_or_update(
    *,
    evaluation_id=None,
    session_id=None,
    owner_id=None,
    severity: str,
    actor,
    kind: str,
    detail: str,
    alert: Alert | None = None,
    data: dict | None = None,
) -> Incident:
    """The run's incident, opened now if it has none (then ``opened`` and ``kind`` go on its timeline),
    its severity raised to ``severity`` if that is higher, ``alert`` added; never raises on a race."""
    where = _run_filter(evaluation_id, session_id)
    who = actor_name(actor)
    with transaction.atomic():
        incident = Incident.objects.select_for_update().filter(**where).first()
        if incident is None:
            try:
                with transaction.atomic():
                    incident = Incident.objects.create(
                        **where, owner_id=owner_id, severity=severity, actor=who, summary=detail[:300]
                    )
            except IntegrityError:  # opened meanwhile by another stop
                incident = Incident.objects.select_for_update().get(**where)
            else:
                add_event(incident, EventKind.OPENED, f"incident opened: {detail}", actor=who)
        changed = ["updated_at"]
        incident.updated_at = timezone.now()
        if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(incident.severity, 0):
            incident.severity = severity
            changed.append("severity")
        if incident.owner_id is None and owner_id is not None:
            incident.owner_id = owner_id
            changed.append("owner")
        if incident.status in (IncidentStatus.RESOLVED, IncidentStatus.FALSE_POSITIVE):
            # A new stop on a run whose incident was closed opens it again (its quarantine too).
            incident.status = IncidentStatus.OPEN
            incident.released_at = incident.released_by = None
            changed += ["status", "released_at", "released_by"]
        incident.save(update_fields=changed)
        if alert is not None:
            incident.alerts.add(alert)
        add_event(incident, kind, detail, actor=who, data=data)
    log.warning("incident %s on %s: %s", incident.pk, evaluation_id or session_id, detail)
    return incident


def add_event(
    incident: Incident, kind: str, detail: str, *, actor: str = "", data: dict | None = None, internal: bool = False
) -> IncidentEvent:
    return IncidentEvent.objects.create(
        incident=incident, kind=kind, detail=detail[:500], actor=actor[:150], data=data or {}, internal=internal
    )


def note_alert(alert: Alert) -> Incident | None:
    """An alert (any action) on a run that already has an incident goes on its timeline."""
    incident = for_run(evaluation_id=alert.evaluation_id) if alert.evaluation_id else None
    if incident is None and alert.session_id:
        incident = for_run(session_id=alert.session_id)
    if incident is None:
        return None
    incident.alerts.add(alert)
    add_event(incident, EventKind.ALERT, f"rule {alert.rule_name}: {alert.message}", actor=f"rule {alert.rule_name}")
    return incident


def open_for_stop_rule(alert: Alert, *, owner_id=None) -> Incident:
    """A rule with action "stop" fired: its alert opens (or joins) the run's incident, and the stop is requested."""
    incident = open_or_update(
        evaluation_id=alert.evaluation_id,
        session_id=None if alert.evaluation_id else alert.session_id,
        owner_id=owner_id,
        severity=alert.severity,
        actor=f"rule {alert.rule_name}",
        kind=EventKind.ALERT,
        detail=f"rule {alert.rule_name}: {alert.message}",
        alert=alert,
        data={"evidence": alert.evidence},
    )
    add_event(incident, EventKind.STOP_REQUESTED, "safety stop requested", actor=f"rule {alert.rule_name}")
    return incident


def open_for_emergency_stop(
    *, evaluation_id=None, session_id=None, owner_id=None, actor=None, alert: Alert | None = None, via: str = ""
) -> Incident:
    """An emergency stop (``via`` "kill switch" when it came from there) opens or joins the incident."""
    how = via or "emergency stop"
    return open_or_update(
        evaluation_id=evaluation_id,
        session_id=session_id,
        owner_id=owner_id,
        severity="critical",
        actor=actor,
        kind=EventKind.STOP_REQUESTED,
        detail=f"{how} by {actor_name(actor)}",
        alert=alert,
    )


def record_evidence(*, evaluation_id=None, session_id=None, evidence: dict, artifacts: list[dict]) -> Incident | None:
    """What the stop kept: the runner's evidence account and the artifacts' names, sizes and hashes,
    with the freeze, kill and collection on the timeline. Nothing when the run has no incident."""
    incident = for_run(evaluation_id=evaluation_id, session_id=session_id)
    if incident is None:
        return None
    kept = {**evidence, "artifacts": artifacts}
    incident.evidence = {**(incident.evidence or {}), **kept}
    incident.updated_at = timezone.now()
    incident.save(update_fields=["evidence", "updated_at"])
    if evidence.get("frozen"):
        add_event(
            incident,
            EventKind.CONTAINER_FROZEN,
            f"sandbox frozen ({FROZEN_BY.get(evidence.get('frozen_by'), 'the engine')}) "
            f"{evidence.get('freeze_ms')} ms after the stop was obeyed; "
            f"{len(evidence.get('processes') or [])} processes seen",
            actor="runner",
        )
    add_event(
        incident,
        EventKind.CONTAINER_KILLED,
        f"sandbox killed {round(evidence.get('total_ms') or 0)} ms after the stop was obeyed",
        actor="runner",
    )
    if evidence.get("collected"):
        add_event(
            incident,
            EventKind.EVIDENCE_COLLECTED,
            f"{len(artifacts)} file(s) collected from /output",
            actor="runner",
            data={"artifacts": artifacts},
        )
    elif evidence.get("detail"):
        add_event(
            incident, EventKind.EVIDENCE_COLLECTED, f"no evidence collected: {evidence['detail']}", actor="runner"
        )
    return incident


def keep_files(incident: Incident, files) -> int:
    """Store files collected from a stopped session (``ParsedArtifact``-like: name, size, sha256,
    data) on its incident; each in its own savepoint, a refused one left out. Returns how many were kept."""
    kept = 0
    for item in files:
        try:
            with transaction.atomic():
                IncidentFile.objects.update_or_create(
                    incident=incident,
                    name=item.name,
                    defaults={"size": item.size, "sha256": item.sha256, "data": item.data},
                )
            kept += 1
        except (IntegrityError, DataError):
            log.warning("incident %s: file %r not kept", incident.pk, item.name[:80], exc_info=True)
    return kept


def add_samples(incident: Incident, samples: list[dict]) -> None:
    """Resource samples up to the kill, for a session (an evaluation's samples are stored already)."""
    incident.evidence = {**(incident.evidence or {}), "samples": samples}
    incident.save(update_fields=["evidence"])


class TransitionRefused(Exception):
    """A status change that is not allowed (unknown status, or no change)."""


def transition(incident: Incident, status: str, *, actor, comment: str = "", request=None) -> Incident:
    """An operator changes the incident's status, with a comment (operators only see it); audited."""
    if status not in IncidentStatus.values:
        raise TransitionRefused(f"status must be one of {', '.join(IncidentStatus.values)}")
    if status == incident.status and not comment:
        raise TransitionRefused(f"the incident is {status} already")
    was = incident.status
    incident.status = status
    incident.status_comment = comment[:5000]
    incident.status_changed_at = incident.updated_at = timezone.now()
    incident.status_changed_by = actor
    incident.save(update_fields=["status", "status_comment", "status_changed_at", "status_changed_by", "updated_at"])
    add_event(incident, EventKind.STATUS_CHANGED, f"{was} -> {status}", actor=actor_name(actor))
    if comment:
        add_event(incident, EventKind.STATUS_CHANGED, comment[:500], actor=actor_name(actor), internal=True)
    audit.record(
        "incident.transition", actor=actor, target=f"incident:{incident.pk}", request=request, was=was, now=status
    )
    return incident


def release(incident: Incident, *, actor, request=None) -> bool:
    """An operator releases the quarantine: the owner may download again (once; audited)."""
    changed = (
        Incident.objects.filter(pk=incident.pk, released_at__isnull=True).update(
            released_at=timezone.now(), released_by=actor
        )
        == 1
    )
    incident.refresh_from_db()
    if changed:
        add_event(incident, EventKind.QUARANTINE_RELEASED, "quarantine released", actor=actor_name(actor))
        audit.record("incident.release", actor=actor, target=f"incident:{incident.pk}", request=request)
    return changed


def quarantine_of(*, evaluation_id=None, session_id=None) -> Incident | None:
    """The run's incident when it quarantines the run's artifacts (or the session's files), else None."""
    incident = for_run(evaluation_id=evaluation_id, session_id=session_id)
    return incident if incident is not None and incident.quarantined else None


def record_quarantined_download(incident: Incident, *, actor, what: str, request=None) -> None:
    """An operator downloaded a quarantined artifact or file: audited, and on the timeline."""
    audit.record(
        "incident.quarantined_download", actor=actor, target=f"incident:{incident.pk}", request=request, what=what[:300]
    )
    add_event(
        incident, EventKind.QUARANTINED_DOWNLOAD, f"downloaded {what[:200]}", actor=actor_name(actor), internal=True
    )


def owner_view(incident: Incident | None) -> dict | None:
    """What a run's owner may see: that it exists, its status and public timeline; no reviewers' comments."""
    if incident is None:
        return None
    return {
        "id": incident.pk,
        "status": incident.status,
        "status_label": incident.get_status_display().lower(),
        "severity": incident.severity,
        "opened_at": incident.opened_at.isoformat(),
        "quarantined": incident.quarantined,
    }


RELEASE_ACK = "release-ack"  # ``?quarantine=release-ack``: an operator downloads a quarantined file knowingly


def quarantine_refusal(
    *, evaluation_id=None, session_id=None, user, operator: bool, ack: str, what: str, request=None
) -> dict | None:
    """Why a download is refused by the run's quarantine (a 403's body), or None when it may go on.

    The owner is refused while the incident is active and not released. An operator downloads only
    with ``?quarantine=release-ack``, and that download is audited; without it, refused as well."""
    incident = quarantine_of(evaluation_id=evaluation_id, session_id=session_id)
    if incident is None:
        return None
    message = QUARANTINE_MESSAGE if evaluation_id is not None else SESSION_QUARANTINE_MESSAGE
    if not operator:
        return {"detail": message, "code": "quarantined", "incident": incident.pk}
    if ack != RELEASE_ACK:
        return {
            "detail": f"{message} Operators: add ?quarantine={RELEASE_ACK} to download it (audited).",
            "code": "quarantined",
            "incident": incident.pk,
        }
    record_quarantined_download(incident, actor=user, what=what, request=request)
    return None
