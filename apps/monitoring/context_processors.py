"""Template context for every page: the operators' count of unacknowledged alerts (the header badge)."""

from __future__ import annotations


def alert_badge(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from apps.accounts.roles import is_operator

    if not is_operator(user):
        return {}
    from apps.monitoring.models import Alert

    return {"is_operator": True, "unacknowledged_alerts": Alert.objects.unacknowledged().count()}
