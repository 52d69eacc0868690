"""This instance's sandbox containers on the (possibly shared) Docker engine: list them, remove one.

A container the engine can neither start nor remove (a runtime hung in ``create``, e.g. a wedged
gVisor sandbox) is released: the host processes of its runtime, found by the container's full id
in their command line, are killed, and the removal is tried again. That needs the engine on this
host (a unix socket), which is where the worker and the reconciler that remove containers run.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import docker.errors
from django.conf import settings

from apps.sandboxing import engine
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_RUN


def list_instance_containers() -> list[tuple[str, str]]:
    """(container id, run id) of every container, running or not, labelled with this instance.

    A warm pool's sandbox is labelled with a pool id when it starts and named ``crucible-<run id>``
    when a run claims it (``pool.claim``): its name then says whose it is."""
    return [(c["Id"], run_of(c)) for c in _instance_listing()]


def instance_containers_older_than(seconds: float) -> list[tuple[str, str]]:
    """(container id, run id) of this instance's containers the engine created over ``seconds`` ago."""
    created_before = time.time() - seconds
    return [(c["Id"], run_of(c)) for c in _instance_listing() if c.get("Created", 0) < created_before]


def _instance_listing() -> list[dict]:
    return engine.client().api.containers(all=True, filters={"label": f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}"})


def run_of(container: dict) -> str:
    """The run a container (as the engine lists it) belongs to: its name's, else its label's."""
    for name in container.get("Names") or []:
        if name.startswith(RUN_NAME_PREFIX) and not name.startswith(POOL_NAME_PREFIX):
            return name[len(RUN_NAME_PREFIX) :]
    return (container.get("Labels") or {}).get(LABEL_RUN, "")


RUN_NAME_PREFIX = "/crucible-"
POOL_NAME_PREFIX = "/crucible-pool-"


log = logging.getLogger(__name__)
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


def remove(name_or_id: str) -> None:
    """Kill and remove one container. Already gone, or being removed: fine. Anything else raises.

    The one way a container is removed: by a sandbox when its run ends, and by the reconciler. A
    container whose runtime is stuck is released (its runtime's processes killed) and removed again.
    """
    try:
        _remove(name_or_id)
    except Exception:
        if not release(name_or_id):
            raise
        _remove(name_or_id)


def removed(container_id: str, what: str) -> bool:
    """``remove``, for a sweep that goes on with the next container: False (logged, with ``what`` the
    container is) when the engine refused."""
    try:
        remove(container_id)
    except Exception:
        log.warning("could not remove %s %s", what, container_id[:12], exc_info=True)
        return False
    return True


def _remove(name_or_id: str) -> None:
    try:
        engine.client().api.remove_container(name_or_id, force=True, v=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as exc:
        if exc.status_code == 409 and "in progress" in str(exc):
            return
        raise


def release(container_id: str) -> int:
    """SIGKILL the host processes of a stuck container's runtime; how many there were.

    Only for a full container id and an engine on this host: the id (64 hex digits, unique) in a
    process's command line is what marks it as that container's runtime (runsc, its sandbox and
    gofer, a shim or a hung ``create``).
    """
    if not _FULL_ID.match(container_id) or not settings.DOCKER_HOST.startswith("unix://"):
        return 0
    killed = 0
    for pid in runtime_processes(container_id):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("cannot kill process %d of stuck container %s", pid, container_id[:12])
    if killed:
        log.warning("released stuck container %s: killed %d runtime processes", container_id[:12], killed)
    return killed


def runtime_processes(container_id: str) -> list[int]:
    """Host processes whose command line holds ``container_id`` (never this process)."""
    return runtime_processes_holding(container_id)


def runtime_processes_holding(text: str) -> list[int]:
    """Host processes whose command line holds ``text`` (never this process)."""
    token = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if token in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
