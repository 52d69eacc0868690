"""The reconciler repairs what crashes leave behind."""

import contextlib
import threading
import time
import uuid
from datetime import timedelta

import django_rq
import docker.errors
import pytest
from django.conf import settings
from django.utils import timezone
from rq import Worker
from rq.job import Job

from apps.audit.models import AuditEvent
from apps.evaluations import dispatch, reconciler, running, services
from apps.evaluations.models import Reason, Status
from apps.evaluations.tests.factories import add_chunk, make_evaluation
from apps.sandboxing import containers, engine, pool, removal, runner, selfcheck
from apps.sandboxing.outcomes import Outcome, RunRequest
from apps.sandboxing.policy import Limits, Profile, runtime_for
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.django_db


def test_a_queued_evaluation_whose_job_was_lost_is_enqueued_again(alice):
    evaluation = make_evaluation(alice, created_at=timezone.now() - timedelta(minutes=1))
    django_rq.get_queue(evaluation.queue_name).connection.delete(f"rq:job:{services.job_id(evaluation.pk)}")
    assert reconciler.reconcile()["requeued"] == [str(evaluation.pk)]
    job = Job.fetch(services.job_id(evaluation.pk), connection=django_rq.get_connection(evaluation.queue_name))
    assert job.args == (str(evaluation.pk),)
    # A second pass finds the live job and does nothing.
    assert reconciler.reconcile()["requeued"] == []


def test_a_sample_kept_for_a_job_whose_worker_died_before_running_it_is_enqueued_again(alice):
    batch_id = uuid.uuid4()
    sample = make_evaluation(alice, batch_id=batch_id, held=True, created_at=timezone.now() - timedelta(minutes=1))
    with dispatch.keeping() as keep:
        keep.batch_id = batch_id
        dispatch.release(alice.pk)
        assert keep.take().evaluation_id == sample.pk  # the job has it, and then its worker dies
    assert not Job.exists(services.job_id(sample.pk), connection=django_rq.get_connection(sample.queue_name))
    assert reconciler.reconcile()["requeued"] == [str(sample.pk)]
    assert Job.exists(services.job_id(sample.pk), connection=django_rq.get_connection(sample.queue_name))


def test_a_fresh_queued_evaluation_is_left_alone(alice):
    make_evaluation(alice)
    assert reconciler.reconcile()["requeued"] == []


def test_a_running_evaluation_whose_worker_stopped_heartbeating_is_run_again_once(alice):
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S + 5)
    lost = make_evaluation(alice, status=Status.RUNNING, heartbeat_at=stale, attempts=1)
    add_chunk(lost, 1, b"partial\n")
    assert reconciler.reconcile()["worker_lost"] == [str(lost.pk)]
    lost.refresh_from_db()
    assert (lost.status, lost.worker, lost.attempts) == (Status.QUEUED, "", 1)
    # The output stays append-only: a notice marks where the next attempt's output starts.
    chunks = list(lost.chunks.order_by("seq"))
    assert [c.seq for c in chunks] == [1, 2]
    assert chunks[1].stream == "stderr" and b"worker_lost" in bytes(chunks[1].data)
    job = Job.fetch(services.job_id(lost.pk), connection=django_rq.get_connection(lost.queue_name))
    assert job.get_status() == "queued"
    assert AuditEvent.objects.filter(action="evaluation.retry", target=str(lost.pk)).exists()


def test_a_pending_cancel_wins_over_a_retry(alice):
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S + 5)
    lost = make_evaluation(alice, status=Status.RUNNING, heartbeat_at=stale, attempts=1, control="cancel")
    reconciler.reconcile()
    lost.refresh_from_db()
    assert (lost.status, lost.reason) == (Status.CANCELLED, Reason.CANCELLED)


def test_a_running_evaluation_whose_worker_stopped_heartbeating_twice_ends_worker_lost(alice):
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S + 5)
    lost = make_evaluation(alice, status=Status.RUNNING, heartbeat_at=stale, attempts=settings.EVALUATION_MAX_ATTEMPTS)
    alive = make_evaluation(alice, status=Status.RUNNING)
    assert reconciler.reconcile()["worker_lost"] == [str(lost.pk)]
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert (lost.status, lost.reason, lost.error) == (Status.ERROR, Reason.WORKER_LOST, "worker_lost")
    assert AuditEvent.objects.filter(action="evaluation.platform_fault", target=str(lost.pk)).exists()
    assert alive.status == Status.RUNNING


@pytest.mark.docker
def test_a_container_that_belongs_to_no_running_evaluation_is_removed(alice):
    finished = make_evaluation(alice, status=Status.SUCCEEDED)
    running = make_evaluation(alice, status=Status.RUNNING)
    labels = {"org.crucible.instance": settings.CRUCIBLE_INSTANCE}
    orphan = engine.client().containers.create(
        settings.SANDBOX_IMAGE,
        ["sleep", "60"],
        labels={**labels, "org.crucible.run": str(finished.pk)},
        network_mode="none",
    )
    kept = engine.client().containers.create(
        settings.SANDBOX_IMAGE,
        ["sleep", "60"],
        labels={**labels, "org.crucible.run": str(running.pk)},
        network_mode="none",
    )
    try:
        removed = reconciler.reconcile()["orphans_removed"]
        assert orphan.id in removed
        assert kept.id not in removed
        assert {cid for cid, _ in containers.list_instance_containers()} == {kept.id}
    finally:
        kept.remove(force=True)


@pytest.mark.docker
def test_a_never_claimed_runs_sandbox_started_ahead_of_its_claim_is_kept_but_a_requeued_runs_is_removed(alice):
    """A worker starts a cold run's sandbox while it claims the row (``runner.Ahead``); a requeued run's
    container is what its lost attempt left."""
    about_to_run = make_evaluation(alice, status=Status.QUEUED, attempts=0)
    requeued = make_evaluation(alice, status=Status.QUEUED, attempts=1)
    ahead = _container(str(about_to_run.pk), settings.CRUCIBLE_INSTANCE)
    left = _container(str(requeued.pk), settings.CRUCIBLE_INSTANCE)
    try:
        removed = reconciler.reconcile()["orphans_removed"]
        assert left.id in removed and ahead.id not in removed
    finally:
        for container in (ahead, left):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


@pytest.mark.docker
def test_a_warm_sandbox_claimed_for_a_run_whose_row_is_not_claimed_yet_is_kept(alice):
    """A worker claims the run's warm sandbox while it claims the row (``runner.Ahead``): for a few
    milliseconds the sandbox is named for a run whose row still says queued."""
    owner = f"test-worker-{uuid.uuid4().hex[:8]}"
    about_to_run = make_evaluation(alice, status=Status.QUEUED, attempts=0)
    profile = Profile(image=runtime_for("python").image, limits=small_limits())
    pool.WarmPool(owner, 1, lambda: [profile]).refill_once()
    try:
        claimed = pool.claim(owner, profile, str(about_to_run.pk))
        assert claimed is not None
        assert claimed.container_id not in reconciler.remove_orphan_containers()
        assert (claimed.container_id, str(about_to_run.pk)) in containers.list_instance_containers()
    finally:
        pool.remove_pools_of(owner)


def _container(run_id: str, instance: str):
    labels = {"org.crucible.instance": instance, "org.crucible.run": run_id}
    return engine.client().containers.create(
        settings.SANDBOX_IMAGE, ["sleep", "60"], labels=labels, network_mode="none"
    )


def _canary_container():
    """What a canary the engine went away under leaves: created under a canary's run id, never started."""
    return _container(f"{selfcheck.CANARY_RUN_PREFIX}{uuid.uuid4()}", settings.CRUCIBLE_INSTANCE)


@pytest.mark.docker
def test_a_self_check_canary_an_engine_left_behind_is_removed_and_audited(monkeypatch):
    monkeypatch.setattr(selfcheck, "CANARY_LEFT_AFTER_S", 0)
    left = _canary_container()
    try:
        time.sleep(1.1)  # the engine's creation times are in whole seconds
        result = reconciler.reconcile()
        assert left.id in result["canaries_removed"]
        assert left.id not in result["orphans_removed"]
        with pytest.raises(docker.errors.NotFound):
            left.reload()
        assert AuditEvent.objects.filter(action="reconciler.remove_canary", target="selfcheck").exists()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            left.remove(force=True)


@pytest.mark.docker
def test_a_canary_the_engine_refuses_to_remove_does_not_stop_the_sweep(monkeypatch):
    monkeypatch.setattr(selfcheck, "CANARY_LEFT_AFTER_S", 0)
    refused, left = (_canary_container() for _ in "ab")
    real_remove = containers.remove

    def remove(container_id):
        if container_id == refused.id:
            raise docker.errors.APIError("the engine refused")
        real_remove(container_id)

    monkeypatch.setattr(containers, "remove", remove)
    try:
        time.sleep(1.1)  # the engine's creation times are in whole seconds
        removed = reconciler.remove_left_canaries()
        assert left.id in removed and refused.id not in removed
        refused.reload()  # still there: raises NotFound if it was removed
        audited = AuditEvent.objects.filter(action="reconciler.remove_canary").values_list("details", flat=True)
        assert not [data for data in audited if data.get("container") == refused.id[:12]]
    finally:
        for container in (refused, left):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


@pytest.mark.docker
def test_another_installations_containers_on_a_shared_engine_are_left_alone(alice):
    """Another Crucible on the same engine: its containers look orphaned from here, and are not ours."""
    finished = make_evaluation(alice, status=Status.SUCCEEDED)
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S + 5)
    lost = make_evaluation(alice, status=Status.RUNNING, heartbeat_at=stale, attempts=1)
    others = [_container(str(finished.pk), "another-installation"), _container(str(lost.pk), "another-installation")]
    ours = _container(str(finished.pk), settings.CRUCIBLE_INSTANCE)
    try:
        result = reconciler.reconcile()
        assert result["orphans_removed"] == [ours.id]
        assert result["worker_lost"] == [str(lost.pk)]  # the lost run is acted on, but only our containers go
        for other in others:
            other.reload()  # raises NotFound if it was removed
    finally:
        for container in [*others, ours]:
            try:
                container.remove(force=True)
            except Exception:  # noqa: S110 (already gone)
                pass


@pytest.mark.docker
def test_the_warm_pool_of_a_worker_that_is_gone_is_removed_and_a_live_workers_pool_is_kept():
    profile = Profile(image=settings.SANDBOX_IMAGE, limits=Limits.from_settings())
    connection = django_rq.get_connection("default")
    alive = Worker([], connection=connection, name=f"alive-{uuid.uuid4().hex[:8]}")
    alive.register_birth()
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    try:
        pool.WarmPool(alive.name, 1, lambda: [profile]).refill_once()
        pool.WarmPool(gone, 2, lambda: [profile]).refill_once()
        gone_ids = set(pool.idle(gone))
        claimed = pool.claim(gone, profile, "a-run-its-worker-lost")  # claimed ones go too
        removed = reconciler.reconcile()["pools_removed"]
        assert set(removed) == gone_ids and claimed.container_id in removed
        assert len(pool.idle(alive.name)) == 1
        assert AuditEvent.objects.filter(action="reconciler.remove_pool_container", target=gone).count() == 2
    finally:
        alive.register_death()
        pool.remove_pools_of(alive.name)
        pool.remove_pools_of(gone)


@pytest.mark.docker
def test_a_pool_sandbox_claimed_by_a_running_evaluation_is_kept_when_redis_forgot_its_worker(alice):
    """A flushed Redis lists no worker at all: the run's sandbox stays with the run, idle ones go."""
    profile = Profile(image=settings.SANDBOX_IMAGE, limits=Limits.from_settings())
    forgotten = f"forgotten-{uuid.uuid4().hex[:8]}"
    running = make_evaluation(alice, status=Status.RUNNING, worker=forgotten, heartbeat_at=timezone.now())
    try:
        pool.WarmPool(forgotten, 2, lambda: [profile]).refill_once()
        claimed = pool.claim(forgotten, profile, str(running.pk))
        idle = set(pool.idle(forgotten))
        removed = reconciler.remove_dead_workers_pools()
        assert set(removed) == idle
        assert engine.client().api.inspect_container(claimed.container_id)["State"]["Running"]
    finally:
        pool.remove_pools_of(forgotten)


class _HeldRemoval:
    """Keeps a worker's remover busy until ``release`` (the engine slow to remove something else)."""

    container_id = "held-removal"

    def __init__(self):
        self.released = threading.Event()

    def remove(self) -> None:
        self.released.wait(30)

    def release(self) -> None:
        self.released.set()


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_sandbox_whose_worker_died_before_removing_it_behind_the_run_is_removed_by_the_orphan_sweep(alice):
    remover = removal.Remover(capacity=2, name="test-remover-dies")
    remover.start()
    held = _HeldRemoval()
    remover.hand_over(held)
    removal.install(remover)
    try:
        evaluation = make_evaluation(alice, code="print('hi')")
        assert running.run(str(evaluation.pk)) == running.RunDisposition.FINISHED
        evaluation.refresh_from_db()
        assert evaluation.status == Status.SUCCEEDED
        # Its sandbox waits behind the held removal; then the worker dies (it never drains).
        assert str(evaluation.pk) in {run_id for _, run_id in containers.list_instance_containers()}
        removal.install(None)
        removed = reconciler.remove_orphan_containers()
        assert len(removed) == 1
        assert str(evaluation.pk) not in {run_id for _, run_id in containers.list_instance_containers()}
    finally:
        removal.install(None)
        held.release()
        remover.drain()


def _sample_in_a_kept_sandbox(worker: str, batch: str, run_id: str) -> None:
    """A sample of ``batch`` run as ``worker``'s process runs it: its sandbox reset and kept in the background."""
    request = RunRequest(run_id=run_id, runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits())
    reuse = runner.Reuse(owner=worker, group=batch, background=True)
    results = runner.run_programs(
        request, [runner.Program(b"print(1)")], on_output=lambda s, d: None, control=lambda: None, reuse=reuse
    )
    assert results[0].outcome == Outcome.EXITED


@pytest.mark.docker
def test_the_sandbox_a_worker_hands_to_bobs_next_sample_is_never_swept_while_bob_runs(alice, bob):
    """Alice's sample ended (her run is over); the worker hands its sandbox to Bob's running sample of
    the same batch without renaming it. Redis forgot the worker: the reconciler still leaves it."""
    forgotten = f"forgotten-{uuid.uuid4().hex[:8]}"
    batch = str(uuid.uuid4())
    alices = make_evaluation(alice, status=Status.SUCCEEDED, worker=forgotten)
    bobs = make_evaluation(bob, status=Status.RUNNING, worker=forgotten, heartbeat_at=timezone.now())
    try:
        _sample_in_a_kept_sandbox(forgotten, batch, str(alices.pk))
        pool.wait_for_handovers(forgotten, 60, abandon=False)
        (kept,) = pool.kept(forgotten)
        profile = runner.profile_for(
            RunRequest(run_id=str(bobs.pk), runtime=runtime_for("python"), code=b"", stdin=b"", limits=small_limits())
        )
        handed = pool.claim(forgotten, profile, str(bobs.pk), key=pool.reuse_key(profile, batch))
        assert handed.container_id == kept
        result = reconciler.reconcile()
        assert kept not in result["orphans_removed"] + result["pools_removed"]
        assert engine.client().api.inspect_container(kept)["State"]["Running"]
        # Bob's run over, the worker has no live run left: its kept sandbox goes with its pool.
        bobs.status = Status.SUCCEEDED
        bobs.save(update_fields=["status"])
        assert reconciler.remove_dead_workers_pools() == [kept]
    finally:
        pool.wait_for_handovers(forgotten, 60)
        pool.remove_pools_of(forgotten)


@pytest.mark.docker
def test_a_lost_runs_worker_loses_the_sandboxes_it_kept_unless_it_still_runs_something(alice, bob):
    lost_worker, busy_worker = f"lost-{uuid.uuid4().hex[:8]}", f"busy-{uuid.uuid4().hex[:8]}"
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LOST_AFTER_S + 5)
    try:
        for worker in (lost_worker, busy_worker):
            _sample_in_a_kept_sandbox(worker, str(uuid.uuid4()), str(uuid.uuid4()))
            pool.wait_for_handovers(worker, 60, abandon=False)
        (busy_kept,) = pool.kept(busy_worker)
        make_evaluation(alice, status=Status.RUNNING, worker=lost_worker, heartbeat_at=stale, attempts=1)
        make_evaluation(alice, status=Status.RUNNING, worker=busy_worker, heartbeat_at=stale, attempts=1)
        make_evaluation(bob, status=Status.RUNNING, worker=busy_worker, heartbeat_at=timezone.now())
        assert len(reconciler.end_lost_runs()) == 2
        assert pool.kept(lost_worker) == []
        assert pool.kept(busy_worker) == [busy_kept]
    finally:
        for worker in (lost_worker, busy_worker):
            pool.wait_for_handovers(worker, 60)
            pool.remove_pools_of(worker)
