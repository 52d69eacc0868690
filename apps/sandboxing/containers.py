"""This instance's sandbox containers on the (possibly shared) Docker engine: list them, remove one."""

from __future__ import annotations

import docker.errors
from django.conf import settings

from apps.sandboxing import engine
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_RUN


def list_instance_containers() -> list[tuple[str, str]]:
    """(container id, run id) of every container, running or not, labelled with this instance."""
    containers = engine.client().api.containers(
        all=True, filters={"label": f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}"}
    )
    return [(c["Id"], (c.get("Labels") or {}).get(LABEL_RUN, "")) for c in containers]


def remove(name_or_id: str) -> None:
    """Kill and remove one container. Already gone, or being removed: fine. Anything else raises.

    The one way a container is removed: by a sandbox when its run ends, and by the reconciler.
    """
    try:
        engine.client().api.remove_container(name_or_id, force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return
        raise
