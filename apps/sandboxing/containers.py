"""This instance's sandbox containers on the (possibly shared) Docker engine, for the reconciler."""

from __future__ import annotations

import logging

import docker.errors
from django.conf import settings

from apps.sandboxing import engine
from apps.sandboxing.runner import LABEL_INSTANCE, LABEL_RUN

log = logging.getLogger(__name__)


def list_instance_containers() -> list[tuple[str, str]]:
    """(container id, run id) of every container, running or not, labelled with this instance."""
    containers = engine.client().api.containers(
        all=True, filters={"label": f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}"}
    )
    return [(c["Id"], (c.get("Labels") or {}).get(LABEL_RUN, "")) for c in containers]


def remove(container_id: str) -> None:
    """Kill and remove one container; a container that is already gone (or going) is fine."""
    try:
        engine.client().api.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return
        raise
