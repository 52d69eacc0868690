"""Build evaluations directly in the database, for tests that need a row in a given state."""

from __future__ import annotations

import hashlib

from django.utils import timezone

from apps.evaluations.models import Artifact, Evaluation, OutputChunk, Status


def make_evaluation(owner, *, status=Status.QUEUED, code="print('hi')", **fields) -> Evaluation:
    values = dict(
        owner=owner,
        code=code,
        code_sha256=hashlib.sha256(code.encode()).hexdigest(),
        language="python",
        timeout_s=5,
        memory_mb=128,
        cpus=1,
        pids_limit=64,
        output_cap_bytes=1 << 20,
        status=status,
    )
    if status != Status.QUEUED:
        values["started_at"] = timezone.now()
        values["heartbeat_at"] = timezone.now()
    if status not in (Status.QUEUED, Status.RUNNING):
        values["finished_at"] = timezone.now()
    values.update(fields)
    return Evaluation.objects.create(**values)


def add_chunk(evaluation, seq: int, data: bytes, stream: str = "stdout") -> OutputChunk:
    return OutputChunk.objects.create(evaluation=evaluation, seq=seq, stream=stream, data=data)


def add_artifact(evaluation, name: str, data: bytes) -> Artifact:
    return Artifact.objects.create(
        evaluation=evaluation, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data
    )
