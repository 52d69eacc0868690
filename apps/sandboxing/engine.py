"""The one place that opens a connection to the Docker engine."""

from __future__ import annotations

import threading

import docker
from django.conf import settings

_local = threading.local()


def client() -> docker.DockerClient:
    """A per-thread Docker client (the SDK's HTTP session is not shared across threads)."""
    existing = getattr(_local, "client", None)
    if existing is None:
        existing = docker.DockerClient(base_url=settings.DOCKER_HOST, timeout=30)
        _local.client = existing
    return existing


def ping() -> bool:
    try:
        return bool(client().ping())
    except Exception:
        return False
