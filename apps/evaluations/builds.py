"""Runtime images built in the background, once, with their progress recorded.

A runtime of the repository's definitions (``apps.sandboxing.catalog``) whose image is not on the
engine is built on first use: the first submission for it (or an operator: the admin's action,
``POST /api/v1/runtimes/NAME/build/``) *requests* a build, which writes the runtime's one
``RuntimeBuild`` row ``queued`` and puts a job on the ``builds`` queue. A builder
(``manage.py crucible_builder``, the Procfile's ``builder``: an RQ worker of that queue alone, so
a build of minutes never takes one of the run workers) *claims* the row with a conditional UPDATE
(``queued``, or ``building`` with a stale heartbeat: its builder died) and a fresh token, so two
builds of one image never run at once, on any worker or host. While it builds, the builder writes
the phase (``image.BuildPhase``), a heartbeat and the last lines of the build's log to the row,
only while its token is the row's.

Submissions for the runtime while it builds are accepted and wait ``queued`` with
``awaiting_runtime`` set, on no work queue. When the build succeeds they are released onto their
queues (``release_waiting``); when it fails they end ``error`` (``engine_error``) with a message
that says so, and the row stays ``failed`` (submissions are refused with a 400 that says why)
until an operator builds it again. The reconciler (``reconcile``) hands a build whose builder
died back to the queue (at most ``MAX_ATTEMPTS`` claims), enqueues a requested build whose job
was lost, and releases or ends waiting runs a lost release left behind.

Ordering: a submission locks the build row (``SELECT … FOR UPDATE``) while it decides to wait and
writes its row; the end of a build updates that row before it releases or ends the waiting runs.
So a run that decided to wait is always seen by the release that follows.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum

import django_rq
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from rq import Queue
from rq.job import Job, JobStatus

from apps.audit import services as audit
from apps.evaluations import publisher
from apps.evaluations.models import BuildStatus, Evaluation, Reason, Runtime, RuntimeBuild, Status
from apps.sandboxing import catalog, image
from apps.sandboxing.catalog import Definition
from apps.sandboxing.image import BuildPhase, BuiltImage, Progress

log = logging.getLogger(__name__)

BUILD_QUEUE = "builds"  # consumed by ``manage.py crucible_builder`` only
JOB = "apps.evaluations.jobs.build_runtime_image"
MAX_ATTEMPTS = 2  # claims of one requested build; a build whose builder died twice ends failed
LOG_TAIL_LINES = 30
LOG_LINE_CHARS = 300
WRITE_EVERY_S = 1.0  # progress lines reach the row at most this often (a phase change at once)
# A URL's user and password (a mirror's credentials) never reach the row, which users can read.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")

# What builds an image for a definition, reporting progress. ``image.build_runtime`` in production;
# the tests pass a small one of their own to ``run`` (a real image, but no minutes of debootstrap).
Builder = Callable[[Definition, Progress], BuiltImage]


class BuildRefused(Exception):
    """The runtime's image cannot be built here (not one of the repository's definitions)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RunDisposition(StrEnum):
    """What one build job did."""

    MISSING = "missing"
    NOT_CLAIMED = "not_claimed"  # queued no more (built, or another builder holds a live claim)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST_CLAIM = "lost_claim"  # the claim went to another builder meanwhile; nothing was recorded


class Wait(StrEnum):
    """What a run for a runtime whose image is missing does (``wait_for_build``)."""

    WAIT = "wait"  # a build is queued or running: the run waits for it
    RUN = "run"  # the build has just succeeded: the run goes on its queue
    FAILED = "failed"  # the last build failed: the run cannot wait for it


def definition_for(runtime: Runtime) -> Definition | None:
    """The repository definition whose image the runtime row ``runtime`` runs on, or None: only those
    are built here (an operator's own row, or one pointed at another image, is theirs to build)."""
    definition = catalog.definitions().get(runtime.name)
    if definition is None or not definition.own_image or (runtime.image or settings.SANDBOX_IMAGE) != definition.image:
        return None
    return definition


def build_of(runtime: Runtime) -> RuntimeBuild | None:
    return RuntimeBuild.objects.filter(runtime=runtime).first()


def failure_message(runtime: Runtime, build: RuntimeBuild) -> str:
    """What a submission refused, or a run ended, because the runtime's last build failed reads."""
    return (
        f"The {runtime.name} runtime's image could not be built (its build failed in the {build.phase} step); "
        "an operator can build it again (admin: Runtimes, or POST /api/v1/runtimes/"
        f"{runtime.name}/build/)."
    )


# --- requesting -----------------------------------------------------------------------------


def request(runtime: Runtime, *, by: str, again: bool = False, actor=None, http_request=None) -> RuntimeBuild:
    """Ask for ``runtime``'s image to be built, unless a build of it is queued or running.

    A submission (``again`` False) starts a build the first time, or after one that succeeded if the
    image has gone since; an operator (``again``) also restarts a failed one. Raises
    ``BuildRefused`` for a runtime this platform does not build. The job is enqueued on commit,
    and only by the call that changed the row."""
    definition = definition_for(runtime)
    if definition is None:
        raise BuildRefused(
            f"The {runtime.name} runtime is not one this server builds: its image is not a runtime image of "
            "sandbox/runtimes.json."
        )
    now = timezone.now()
    with transaction.atomic():
        build, changed = RuntimeBuild.objects.get_or_create(
            runtime=runtime, defaults={"image": definition.image, "requested_by": by, "requested_at": now}
        )
        if not changed:
            again_from = [BuildStatus.SUCCEEDED, BuildStatus.FAILED] if again else [BuildStatus.SUCCEEDED]
            changed = (
                RuntimeBuild.objects.filter(pk=build.pk, status__in=again_from).update(
                    status=BuildStatus.QUEUED,
                    phase=BuildPhase.WAITING,
                    image=definition.image,
                    claim=None,
                    builder="",
                    attempts=0,
                    requested_at=now,
                    requested_by=by,
                    started_at=None,
                    heartbeat_at=None,
                    finished_at=None,
                    log_tail="",
                    error="",
                    image_id="",
                )
                == 1
            )
        if changed:
            build_id = build.pk
            transaction.on_commit(lambda: enqueue(build_id))
    build.refresh_from_db()
    if changed:
        audit.record("runtime.build_requested", actor=actor, target=runtime.name, request=http_request, by=by)
        log.info("runtime %s: build of %s requested by %s", runtime.name, build.image, by)
    return build


def queue() -> Queue:
    return Queue(BUILD_QUEUE, connection=django_rq.get_connection("default"))


def job_id(build_id: int) -> str:
    return f"runtime-build-{build_id}"


def enqueue(build_id: int) -> None:
    """Put the build job on the builds queue (only the row's id travels; the row is the truth), unless
    it waits there already (a spare job would find nothing to claim: harmless, but noise)."""
    if _job_status(build_id) == JobStatus.QUEUED:
        return
    queue().enqueue(
        JOB,
        build_id,
        job_id=job_id(build_id),
        job_timeout=settings.RUNTIME_BUILD_TIMEOUT_S,
        result_ttl=600,
        failure_ttl=24 * 3600,
    )


def wait_for_build(runtime: Runtime, *, by: str) -> Wait:
    """For a run whose runtime image is missing, inside the caller's transaction: request the build
    (``request``) and lock its row until the caller commits, so the build's end sees the run."""
    build = request(runtime, by=by)
    build = RuntimeBuild.objects.select_for_update().get(pk=build.pk)
    if build.status in (BuildStatus.QUEUED, BuildStatus.BUILDING):
        return Wait.WAIT
    return Wait.RUN if build.status == BuildStatus.SUCCEEDED else Wait.FAILED


def park(evaluation: Evaluation, runtime: Runtime) -> Wait:
    """A worker took the job of a queued run whose runtime image is missing: the run waits for the
    build (off every queue) instead of failing; or it ends ``error`` if the last build failed."""
    with transaction.atomic():
        decision = wait_for_build(runtime, by="run")
        if decision == Wait.WAIT:
            Evaluation.objects.filter(pk=evaluation.pk, status=Status.QUEUED).update(awaiting_runtime=True)
    if decision == Wait.FAILED:
        build = build_of(runtime)
        _end_waiting(evaluation.pk, failure_message(runtime, build), only_waiting=False)
    return decision


# --- building -------------------------------------------------------------------------------


def claim(build_id: int, builder: str) -> uuid.UUID | None:
    """Take the build for this builder: a queued one, or one whose builder stopped beating. None when
    another builder holds it or it is not waiting to be built."""
    token = uuid.uuid4()
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUNTIME_BUILD_LOST_AFTER_S)
    taken = (
        RuntimeBuild.objects.filter(pk=build_id, attempts__lt=MAX_ATTEMPTS)
        .filter(Q(status=BuildStatus.QUEUED) | Q(status=BuildStatus.BUILDING, heartbeat_at__lt=stale))
        .update(
            status=BuildStatus.BUILDING,
            claim=token,
            builder=builder[:200],
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
            phase=BuildPhase.WAITING,
            attempts=F("attempts") + 1,
        )
    )
    return token if taken == 1 else None


class Reporter:
    """The builder's side of the row while it builds: phase, heartbeat and the log's last lines,
    written only while ``token`` is the row's claim (``Progress`` for ``image.build_runtime``)."""

    def __init__(self, build_id: int, token: uuid.UUID):
        self.build_id = build_id
        self.token = token
        self.phase = BuildPhase.WAITING
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.lost = False
        self._lock = threading.Lock()
        self._written_at = 0.0
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, name=f"build-{build_id}-heartbeat", daemon=True)

    def __call__(self, phase: BuildPhase, line: str) -> None:
        with self._lock:
            changed = phase != self.phase
            self.phase = phase
            if line:
                self.lines.append(_USERINFO.sub(r"\1***@", line)[:LOG_LINE_CHARS])
        if changed or time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> bool:
        """The phase, the heartbeat and the log's tail to the row; False once the claim is not ours."""
        with self._lock:
            fields = {"phase": self.phase, "log_tail": "\n".join(self.lines), "heartbeat_at": timezone.now()}
        self._written_at = time.monotonic()
        mine = RuntimeBuild.objects.filter(pk=self.build_id, claim=self.token, status=BuildStatus.BUILDING)
        if mine.update(**fields) != 1:
            self.lost = True
        return not self.lost

    def start(self) -> None:
        self._beat.start()

    def stop(self) -> None:
        self._stop.set()
        self._beat.join(timeout=10)

    def _beat_loop(self) -> None:
        """A heartbeat while a step prints nothing for long (tar, ``docker import``)."""
        from django.db import connection

        try:
            while not self._stop.wait(_heartbeat_every_s()):
                try:
                    self.write()
                except Exception:
                    log.warning("build %s: could not write its heartbeat", self.build_id, exc_info=True)
        finally:
            connection.close()


def _heartbeat_every_s() -> float:
    return max(0.5, settings.RUNTIME_BUILD_LOST_AFTER_S / 4)


def run(build_id: int, *, builder: Builder | None = None, name: str = "") -> RunDisposition:
    """Claim the build ``build_id`` and build its image, recording its progress and its end; waiting
    runs are released when it succeeds and ended when it fails. ``builder`` is the production
    build unless a test passes its own."""
    build = RuntimeBuild.objects.select_related("runtime").filter(pk=build_id).first()
    if build is None:
        return RunDisposition.MISSING
    token = claim(build_id, name or "builder")
    if token is None:
        return RunDisposition.NOT_CLAIMED
    runtime = build.runtime
    reporter = Reporter(build_id, token)
    reporter.write()
    reporter.start()
    try:
        definition = definition_for(runtime)
        if definition is None:
            raise BuildRefused(f"{runtime.name} is no longer a runtime image of sandbox/runtimes.json")
        log.info("runtime %s: building %s", runtime.name, definition.image)
        built = (builder or image.build_runtime)(definition, reporter)
    except Exception as exc:
        log.exception("runtime %s: the build of its image failed", runtime.name)
        reporter.stop()
        return _failed(build, token, reporter, exc)
    reporter.stop()
    return _succeeded(build, token, reporter, built)


def _succeeded(build: RuntimeBuild, token, reporter: Reporter, built: BuiltImage) -> RunDisposition:
    now = timezone.now()
    with reporter._lock:
        tail = "\n".join(reporter.lines)
    ended = RuntimeBuild.objects.filter(pk=build.pk, claim=token, status=BuildStatus.BUILDING).update(
        status=BuildStatus.SUCCEEDED,
        phase=BuildPhase.DONE,
        finished_at=now,
        heartbeat_at=now,
        image_id=built.image_id[:100],
        log_tail=tail,
        error="",
    )
    if ended != 1:
        return RunDisposition.LOST_CLAIM
    _forget_cached_state(build.image)
    released = release_waiting(build.runtime)
    audit.record("runtime.build_succeeded", target=build.runtime.name, image_id=built.image_id, released=len(released))
    log.info("runtime %s: image built (%s); %s runs released", build.runtime.name, built.image_id, len(released))
    return RunDisposition.SUCCEEDED


def _failed(build: RuntimeBuild, token, reporter: Reporter, exc: Exception) -> RunDisposition:
    now = timezone.now()
    with reporter._lock:
        tail = "\n".join(reporter.lines)
        phase = reporter.phase
    detail = _USERINFO.sub(r"\1***@", str(exc) or type(exc).__name__)[-1000:]
    ended = RuntimeBuild.objects.filter(pk=build.pk, claim=token, status=BuildStatus.BUILDING).update(
        status=BuildStatus.FAILED,
        finished_at=now,
        heartbeat_at=now,
        log_tail=tail,
        error=f"failed in the {phase} step: {detail}",
    )
    if ended != 1:
        return RunDisposition.LOST_CLAIM
    build.refresh_from_db()
    ended_runs = end_waiting(build.runtime, build)
    audit.record("runtime.build_failed", target=build.runtime.name, phase=phase, ended=len(ended_runs))
    return RunDisposition.FAILED


def _forget_cached_state(reference: str) -> None:
    """This process's cached answer about the image is stale now that it is built."""
    from apps.evaluations import runtimes

    runtimes.forget(reference)


# --- the runs that wait ---------------------------------------------------------------------


def release_waiting(runtime: Runtime) -> list[str]:
    """The runs waiting for ``runtime``'s image go onto their queues (each by one caller only)."""
    with transaction.atomic():
        waiting = list(
            Evaluation.objects.select_for_update(skip_locked=True)
            .filter(language=runtime.name, awaiting_runtime=True, status=Status.QUEUED)
            .only("pk", "priority", "timeout_s", "tests")
        )
        if not waiting:
            return []
        Evaluation.objects.filter(pk__in=[e.pk for e in waiting]).update(awaiting_runtime=False)
        from apps.evaluations import services  # services -> validation -> runtimes -> builds: not at import

        transaction.on_commit(lambda: services.enqueue_many(waiting))
    return [str(e.pk) for e in waiting]


def end_waiting(runtime: Runtime, build: RuntimeBuild) -> list[str]:
    """The runs waiting for a build that failed end ``error`` (``engine_error``): they never ran."""
    message = failure_message(runtime, build)
    ids = Evaluation.objects.filter(language=runtime.name, awaiting_runtime=True, status=Status.QUEUED).values_list(
        "pk", flat=True
    )
    return [str(pk) for pk in list(ids) if _end_waiting(pk, message, only_waiting=True)]


def _end_waiting(evaluation_id, message: str, *, only_waiting: bool) -> bool:
    rows = Evaluation.objects.filter(pk=evaluation_id, status=Status.QUEUED)
    if only_waiting:
        rows = rows.filter(awaiting_runtime=True)
    ended = (
        rows.update(
            status=Status.ERROR,
            reason=Reason.ENGINE_ERROR,
            error=message[:2000],
            finished_at=timezone.now(),
            awaiting_runtime=False,
        )
        == 1
    )
    if ended:
        publisher.publish_end(Evaluation.objects.get(pk=evaluation_id))
    return ended


# --- repair ---------------------------------------------------------------------------------


def reconcile() -> list[str]:
    """The reconciler's pass over builds: lost builders, lost jobs, and runs a lost release left
    waiting; what it did, one short line each (empty: nothing to do)."""
    return [
        *(f"build of {name} taken back" for name in reclaim_lost_builds()),
        *(f"build of {name} enqueued again" for name in requeue_lost_build_jobs()),
        *(f"waiting run {pk} settled" for pk in settle_waiting()),
    ]


def reclaim_lost_builds() -> list[str]:
    """A build whose builder stopped beating goes back on the queue (another builder claims it), or
    ends failed once it was claimed ``MAX_ATTEMPTS`` times."""
    stale = timezone.now() - timedelta(seconds=settings.RUNTIME_BUILD_LOST_AFTER_S)
    decided = []
    for build in RuntimeBuild.objects.select_related("runtime").filter(
        status=BuildStatus.BUILDING, heartbeat_at__lt=stale
    ):
        lost = RuntimeBuild.objects.filter(pk=build.pk, status=BuildStatus.BUILDING, heartbeat_at__lt=stale)
        if build.attempts >= MAX_ATTEMPTS:
            if lost.update(
                status=BuildStatus.FAILED,
                finished_at=timezone.now(),
                error=f"its builder stopped during the {build.phase} step, {build.attempts} times",
            ):
                build.refresh_from_db()
                end_waiting(build.runtime, build)
                decided.append(build.runtime.name)
                audit.record("reconciler.build_lost", target=build.runtime.name, decision="failed")
        elif lost.update(status=BuildStatus.QUEUED, claim=None, builder="", phase=BuildPhase.WAITING):
            enqueue(build.pk)
            decided.append(build.runtime.name)
            audit.record("reconciler.build_lost", target=build.runtime.name, decision="requeued")
    return decided


def requeue_lost_build_jobs() -> list[str]:
    """A queued build with no live job (Redis lost it) is enqueued again."""
    requeued = []
    for build in RuntimeBuild.objects.select_related("runtime").filter(status=BuildStatus.QUEUED):
        if _job_status(build.pk) not in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            enqueue(build.pk)
            requeued.append(build.runtime.name)
    return requeued


def _job_status(build_id: int) -> JobStatus | None:
    try:
        return Job.fetch(job_id(build_id), connection=queue().connection).get_status(refresh=False)
    except Exception:
        return None


def settle_waiting() -> list[str]:
    """Waiting runs whose build already ended: released (built) or ended (failed)."""
    settled = []
    languages = Evaluation.objects.filter(awaiting_runtime=True, status=Status.QUEUED).values_list(
        "language", flat=True
    )
    for runtime in Runtime.objects.filter(name__in=set(languages)).select_related("build"):
        build = getattr(runtime, "build", None)
        if build is None:
            continue
        if build.status == BuildStatus.SUCCEEDED:
            settled += release_waiting(runtime)
        elif build.status == BuildStatus.FAILED:
            settled += end_waiting(runtime, build)
    return settled


# --- what people read -----------------------------------------------------------------------


def public_view(build: RuntimeBuild | None) -> dict | None:
    """A build as the runtime list, the form and the dashboard show it (no claim token, no builder)."""
    if build is None:
        return None
    return {
        "status": build.status,
        "phase": build.phase,
        "requested_at": build.requested_at.isoformat(),
        "started_at": build.started_at.isoformat() if build.started_at else None,
        "finished_at": build.finished_at.isoformat() if build.finished_at else None,
        "elapsed_s": build.elapsed_s,
        "log_tail": build.log_tail.splitlines()[-LOG_TAIL_LINES:],
        "error": build.error or None,
    }
