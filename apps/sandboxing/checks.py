"""Django system checks: the operator's limit settings must make sense to the sandbox policy.

``crucible/settings.py`` reads the values (it imports no app); the policy's ``MINIMA`` is the one
definition of the smallest limits, so the comparison is made here, where both are known.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, register

from apps.sandboxing.policy import MINIMA


def _limit_settings() -> list[tuple[str, str, float, float, float]]:
    """(field, unit, minimum, default, maximum) for each limit a caller may ask for."""
    return [
        ("TIMEOUT_S", "s", MINIMA.timeout_s, settings.SANDBOX_DEFAULT_TIMEOUT_S, settings.SANDBOX_MAX_TIMEOUT_S),
        ("MEMORY_MB", "MB", MINIMA.memory_mb, settings.SANDBOX_DEFAULT_MEMORY_MB, settings.SANDBOX_MAX_MEMORY_MB),
        ("CPUS", "", MINIMA.cpus, settings.SANDBOX_DEFAULT_CPUS, settings.SANDBOX_MAX_CPUS),
    ]


@register()
def limits_check(app_configs, **kwargs) -> list[Error]:
    """Every default and maximum is at least the policy's minimum, and no default exceeds its maximum."""
    errors = []
    for field, unit, least, default, most in _limit_settings():
        for kind, value in (("DEFAULT", default), ("MAX", most)):
            if value < least:
                message = f"SANDBOX_{kind}_{field}={value:g} is below the smallest limit a sandbox takes"
                errors.append(Error(f"{message} ({least:g}{unit}).", id="sandboxing.E001"))
        if default > most:
            errors.append(
                Error(
                    f"SANDBOX_DEFAULT_{field}={default:g} is above SANDBOX_MAX_{field}={most:g}.", id="sandboxing.E002"
                )
            )
    return errors
