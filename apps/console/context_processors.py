"""Template context for every page: the operators' count of unacknowledged alerts (the header badge)."""

from __future__ import annotations

from apps.accounts.permissions import is_operator
from apps.monitoring.models import Alert


def alert_badge(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not is_operator(user):
        return {}
    return {"is_operator": True, "unacknowledged_alerts": Alert.objects.unacknowledged().count()}
