"""Readiness checks for the health endpoint. Each returns True/False and never raises or leaks details."""

from __future__ import annotations

import logging

import django_rq
from django.conf import settings
from django.db import connection
from rq import Worker

from apps.sandboxing import engine, engine_runtime
from apps.sandboxing.image import find_image

log = logging.getLogger(__name__)


def check_database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        log.warning("health: database check failed", exc_info=True)
        return False


def check_redis() -> bool:
    try:
        return bool(django_rq.get_connection("default").ping())
    except Exception:
        log.warning("health: redis check failed", exc_info=True)
        return False


def check_docker() -> bool:
    return engine.ping()


def check_sandbox_image() -> bool:
    try:
        return find_image(settings.SANDBOX_IMAGE) is not None
    except Exception:
        log.warning("health: sandbox image check failed", exc_info=True)
        return False


def check_sandbox_runtime() -> bool:
    """The runtime sandboxes get can be resolved, and a forced one is registered with the engine."""
    choice = engine_runtime.describe()
    return bool(choice.chosen) and not choice.problem


def check_workers() -> bool:
    try:
        return len(Worker.all(connection=django_rq.get_connection("default"))) > 0
    except Exception:
        log.warning("health: worker check failed", exc_info=True)
        return False


CHECKS = {
    "database": check_database,
    "redis": check_redis,
    "docker": check_docker,
    "sandbox_image": check_sandbox_image,
    "sandbox_runtime": check_sandbox_runtime,
    "workers": check_workers,
}


def report() -> dict[str, bool]:
    return {name: check() for name, check in CHECKS.items()}


def sandbox_runtime() -> dict:
    """Which runtime sandboxes get, said out loud: configured, chosen, whether it is gVisor, on offer."""
    choice = engine_runtime.describe()
    return {
        "configured": choice.configured,
        "chosen": choice.chosen or None,
        "gvisor": choice.gvisor,
        "available": list(choice.available),
    }
