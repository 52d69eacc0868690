"""The one place that opens a connection to the Docker engine."""

from __future__ import annotations

import os
import threading
import time

import docker
from django.conf import settings

_local = threading.local()


def client() -> docker.DockerClient:
    """A per-thread Docker client (the SDK's HTTP session is not shared across threads).

    Every call waits at most ``SANDBOX_ENGINE_TIMEOUT_S``: an engine that hangs (e.g. on a runtime
    stuck in ``create``) fails the call instead of wedging the worker."""
    existing = getattr(_local, "client", None)
    if existing is None:
        existing = docker.DockerClient(base_url=settings.DOCKER_HOST, timeout=settings.SANDBOX_ENGINE_TIMEOUT_S)
        _local.client = existing
    return existing


def reset() -> None:
    """Forget this thread's client (the next call opens a new connection)."""
    _local.__dict__.clear()


# A forked child (an RQ work horse, with WORKER_FORK) must not share the parent's connection to the engine.
os.register_at_fork(after_in_child=reset)


def ping(fresh_for_s: float = 0.0) -> bool:
    """Whether the engine answers. With ``fresh_for_s``, an answer this thread had at most that long
    ago will do (a worker taking a batch's samples one after another asked for each: a round trip to
    the engine per sample, up to 7% of a worker's samples in py-spy)."""
    now = time.monotonic()
    if fresh_for_s > 0 and now - getattr(_local, "answered_at", float("-inf")) < fresh_for_s:
        return True
    try:
        answered = bool(client().ping())
    except Exception:
        answered = False
    _local.answered_at = now if answered else float("-inf")
    return answered
