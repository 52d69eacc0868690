"""Business rules for tasks and batches. The API, the pages, the admin and the commands call these."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts import quotas
from apps.accounts.roles import is_operator
from apps.audit import services as audit
from apps.evaluations import dispatch
from apps.evaluations import services as evaluation_services
from apps.evaluations.callbacks import targets
from apps.evaluations.models import Control, Evaluation, Priority, Reason, Runtime, Status
from apps.tasks import progress
from apps.tasks.models import Batch, BatchStatus, Reuse, SamplesAre, Task
from apps.tasks.validation import BatchTooLarge, TaskBody, TaskInvalid, parse_batch, parse_task, tests_for_language

log = logging.getLogger(__name__)
BULK_SIZE = 1000


class BatchRefused(Exception):
    """429: the batch as a whole is over the owner's quota (nothing was created)."""

    def __init__(self, message: str, retry_after: int = 60):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class NotTaskOwner(Exception):
    """403: only the task's owner (or an operator) may edit it."""


def languages() -> set[str]:
    return set(Runtime.objects.filter(enabled=True).values_list("name", flat=True))


def body_of(task: Task) -> TaskBody:
    return TaskBody(
        slug=task.slug,
        title=task.title,
        prompt=task.prompt,
        language=task.language,
        entry_point=task.entry_point,
        timeout_s=task.timeout_s,
        memory_mb=task.memory_mb,
        tests=task.tests,
        public=task.public,
        source=task.source,
        prompts=task.prompts or {},
    )


# --- Tasks -------------------------------------------------------------------------------------


def create_task(owner, body, *, request=None) -> Task:
    """A new task (version 1). Raises TaskInvalid (400), also for a slug already taken."""
    parsed = parse_task(body, languages(), may_publish=is_operator(owner))
    if Task.objects.filter(slug=parsed.slug).exists():
        raise TaskInvalid({"slug": ["A task with this slug exists; choose another or edit that one."]})
    try:
        with transaction.atomic():
            task = Task.objects.create(owner=owner, **asdict(parsed))
    except IntegrityError:
        raise TaskInvalid({"slug": ["A task with this slug exists; choose another or edit that one."]}) from None
    audit.record("task.create", actor=owner, target=task.slug, request=request, version=task.version)
    return task


def is_used(task: Task) -> bool:
    """Whether any sample was scored, or is waiting to be scored, against this version."""
    return (
        Evaluation.objects.filter(task=task.slug, task_version=task.version).exists()
        or Batch.objects.filter(task=task).exists()
    )


def edit_task(task: Task, actor, changes, *, request=None) -> Task:
    """Apply ``changes`` (a partial body). A version some sample used is never changed in place:
    the edit becomes the next version, which new batches use. Raises NotTaskOwner, TaskInvalid."""
    if not task.may_see_tests(actor):
        raise NotTaskOwner("Only the task's owner or an operator may edit it.")
    parsed = parse_task(changes, languages(), may_publish=is_operator(actor), partial_of=body_of(task))
    with transaction.atomic():
        current = Task.objects.select_for_update().get(pk=task.pk)
        if not current.is_latest:
            raise TaskInvalid({"version": [f"Version {current.version} is not the latest; edit the latest."]})
        if is_used(current):
            Task.objects.filter(pk=current.pk).update(is_latest=False)
            edited = Task.objects.create(
                owner=current.owner, version=current.version + 1, is_latest=True, **asdict(parsed)
            )
        else:
            for name, value in asdict(parsed).items():
                setattr(current, name, value)
            current.save()
            edited = current
    audit.record("task.edit", actor=actor, target=edited.slug, request=request, version=edited.version)
    return edited


def import_task(owner, body: dict) -> tuple[Task, str]:
    """Create or update the task ``body`` describes, idempotently: ("created" | "updated" | "unchanged")."""
    parsed = parse_task(body, languages(), may_publish=True)
    current = Task.objects.filter(slug=parsed.slug, is_latest=True).first()
    if current is None:
        return Task.objects.create(owner=owner, **asdict(parsed)), "created"
    if body_of(current) == parsed:
        return current, "unchanged"
    return edit_task(current, owner if current.owner_id == owner.pk else current.owner, body), "updated"


# --- Batches -----------------------------------------------------------------------------------


def _limits(batch_body, task: Task, maxima) -> tuple[float, int]:
    timeout_s = min(batch_body.timeout_s or task.timeout_s, maxima.timeout_s)
    memory_mb = min(batch_body.memory_mb or task.memory_mb, maxima.memory_mb)
    return timeout_s, memory_mb


def submit_batch(owner, body, *, request=None) -> Batch:
    """Validate and accept a batch as a whole, or refuse it creating nothing.

    Raises TaskInvalid (400), BatchTooLarge (413), PriorityNotAllowed (403) or BatchRefused (429).
    The samples are written ``held`` in one transaction and released onto the work queues a few at
    a time (``apps.evaluations.dispatch``), so a big batch never starves another user's runs.
    """
    parsed = parse_batch(body)
    if parsed.priority == Priority.HIGH and not quotas.may_submit_high_priority(owner):
        raise evaluation_services.PriorityNotAllowed
    if parsed.callback_url:
        try:
            targets.validate(parsed.callback_url)
        except targets.CallbackUrlRefused as exc:
            raise TaskInvalid({"callback_url": [exc.message]}) from None
    tasks = _resolve_tasks(owner, {s.task for s in parsed.samples} | ({parsed.task} if parsed.task else set()))
    waiting = Evaluation.objects.filter(owner=owner, status=Status.QUEUED, batch_id__isnull=False).count()
    if waiting + len(parsed.samples) > settings.QUEUED_SAMPLES_PER_USER:
        raise BatchRefused(
            f"This batch of {len(parsed.samples)} samples would put you over your limit of "
            f"{settings.QUEUED_SAMPLES_PER_USER} waiting samples ({waiting} are waiting now); "
            "wait for those to finish or cancel a batch."
        )
    maxima = evaluation_services.maxima_for(owner)
    operator = is_operator(owner)
    hidden = {slug: not (operator or task.owner_id == owner.pk) for slug, task in tasks.items()}
    now = timezone.now()
    batch = Batch(
        owner=owner,
        task=tasks[parsed.task] if parsed.task else None,
        samples_are=parsed.samples_are,
        k=parsed.k,
        reuse=parsed.reuse,
        priority=parsed.priority,
        callback_url=parsed.callback_url,
        metadata=parsed.metadata,
        total=len(parsed.samples),
        created_at=now,
    )
    rows = []
    enabled = languages()
    for index, sample in enumerate(parsed.samples):
        task = tasks[sample.task]
        language, tests = _language_and_tests(sample, parsed, task, index, enabled)
        prompt = task.prompt if language == task.language else (task.prompts or {}).get(language, "")
        code = prompt + sample.code if parsed.samples_are == SamplesAre.COMPLETIONS else sample.code
        _check_fits(code, tests, index)
        timeout_s, memory_mb = _limits(parsed, task, maxima)
        rows.append(
            Evaluation(
                owner=owner,
                code=code,
                code_sha256=hashlib.sha256(code.encode("utf-8", errors="surrogatepass")).hexdigest(),
                language=language,
                priority=parsed.priority,
                metadata={**sample.metadata, "sample": index},
                timeout_s=timeout_s,
                memory_mb=memory_mb,
                cpus=min(settings.SANDBOX_DEFAULT_CPUS, maxima.cpus),
                pids_limit=settings.SANDBOX_PIDS_LIMIT,
                output_cap_bytes=settings.SANDBOX_OUTPUT_CAP_BYTES,
                batch_id=batch.id,
                task=task.slug,
                task_version=task.version,
                tests=tests,
                tests_hidden=hidden[task.slug],  # Task.may_see_tests, once per task
                held=True,
                sandbox_reuse=parsed.reuse == Reuse.BATCH,
                created_at=now + timezone.timedelta(microseconds=index),
            )
        )
    with transaction.atomic():
        batch.save(force_insert=True)
        Evaluation.objects.bulk_create(rows, batch_size=BULK_SIZE)
        transaction.on_commit(lambda: dispatch.release(owner.pk))
    audit.record(
        "batch.submit",
        actor=owner,
        target=batch.pk,
        request=request,
        samples=batch.total,
        tasks=sorted(tasks)[:20],
        samples_are=batch.samples_are,
    )
    return batch


def _resolve_tasks(owner, slugs: set[str]) -> dict[str, Task]:
    found = {t.slug: t for t in Task.objects.visible_to(owner).latest().filter(slug__in=slugs)}
    missing = sorted(slugs - set(found))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TaskInvalid({"task": [f"No such task: {shown}."]})
    return found


def _language_and_tests(sample, parsed, task: Task, index: int, enabled: set[str]) -> tuple[str, list[dict]]:
    """The language a sample runs in (its own, the batch's, else its task's) and the task's tests in
    that language (``validation.tests_for_language``); a 400 naming the sample when either is missing."""
    language = sample.language or parsed.language or task.language
    where = f"samples[{index}].language" if sample.language else "language"
    if language not in enabled:
        raise TaskInvalid({where: [f"Unknown language {language!r}; one of {', '.join(sorted(enabled))}."]})
    try:
        return language, tests_for_language(task.tests, task.language, language)
    except TaskInvalid as exc:
        raise TaskInvalid({where: [f"Task {task.slug}: {exc.errors['language'][0]}"]}) from None


def _check_fits(code: str, tests: list[dict], index: int) -> None:
    """Each test's program (the sample, and a check's code after it) must fit the sandbox's code file."""
    size = len(code.encode("utf-8", errors="surrogatepass"))
    longest_check = max((len(t.get("code", "").encode()) for t in tests), default=0)
    if size + longest_check + 2 > settings.SANDBOX_MAX_CODE_BYTES:
        most = settings.SANDBOX_MAX_CODE_BYTES
        raise BatchTooLarge({f"samples[{index}].code": [f"With the task's tests it is larger than {most} bytes."]})


def cancel_batch(batch: Batch, *, actor=None, request=None) -> int:
    """Cancel every sample that has not ended; returns how many were asked to end. Idempotent."""
    now = timezone.now()
    samples = Evaluation.objects.filter(batch_id=batch.pk)
    with transaction.atomic():
        held = samples.filter(status=Status.QUEUED, held=True).update(
            status=Status.CANCELLED, reason=Reason.CANCELLED, control=Control.CANCEL, finished_at=now
        )
        Batch.objects.filter(pk=batch.pk, status__in=[BatchStatus.QUEUED, BatchStatus.RUNNING]).update(
            status=BatchStatus.CANCELLED, finished_at=now
        )
    asked = held
    for evaluation in samples.filter(status__in=[Status.QUEUED, Status.RUNNING]).select_related("owner"):
        evaluation_services.cancel(evaluation, actor=actor, request=None)
        asked += 1
    audit.record("batch.cancel", actor=actor, target=batch.pk, request=request, samples=asked)
    batch.refresh_from_db()
    progress.publish(batch)
    return asked
