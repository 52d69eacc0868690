"""Runtime images built in the background on first use, end to end on the real engine, PostgreSQL and
RQ. The build step is the one thing a test replaces (``builds.run``'s ``builder``): a small builder
that reports progress like debootstrap and tags the sandbox image as the runtime's image, so a test
takes seconds, not the minutes of a real debootstrap."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rq import SimpleWorker

from apps.evaluations import builds, reconciler, runtimes, services
from apps.evaluations.models import BuildStatus, Evaluation, Reason, Runtime, RuntimeBuild, Status
from apps.evaluations.tests.helpers import submit, wait_for, work_off_queues
from apps.sandboxing import catalog, engine, image
from apps.sandboxing.catalog import Definition
from apps.sandboxing.image import BuildPhase, BuiltImage

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]

URL = "/api/v1/runtimes/"


@pytest.fixture
def tiny():
    """A runtime of the repository's kind (its own image, built here) whose image is not built yet."""
    definition = Definition(
        name=f"tiny-{uuid.uuid4().hex[:8]}",
        packages=("python3",),
        file_name="main.py",
        run=("python3", "-u", "{file}"),
        version=("python3", "--version"),
    )
    catalog.definitions()[definition.name] = definition
    row = runtimes.row_of(definition)
    Runtime.objects.create(**row)
    builds.queue().empty()
    yield definition
    del catalog.definitions()[definition.name]
    builds.queue().empty()
    if image.find_image(definition.image) is not None:
        engine.client().images.remove(definition.image)  # only the tag: the sandbox image stays


def tiny_builder(definition: Definition, progress) -> BuiltImage:
    """Reports the phases and a few log lines (one with a mirror's password), then tags the sandbox image."""
    progress(BuildPhase.DEBOOTSTRAP, "I: Retrieving InRelease")
    progress(BuildPhase.DEBOOTSTRAP, "I: Retrieving Packages from http://mirror-user:s3cret@mirror.example/debian")
    progress(BuildPhase.STRIP, "")
    progress(BuildPhase.IMPORT, "")
    found = engine.client().images.get(settings.SANDBOX_IMAGE)
    found.tag(definition.repository, "latest")
    return BuiltImage(reference=definition.image, image_id=found.id, built=True)


def failing_builder(definition: Definition, progress) -> BuiltImage:
    progress(BuildPhase.DEBOOTSTRAP, "E: Couldn't find these debs: python3-nosuchthing")
    raise RuntimeError("debootstrap failed (1): E: Couldn't find these debs: python3-nosuchthing")


def stdout_of(evaluation: Evaluation) -> bytes:
    return b"".join(bytes(chunk.data) for chunk in evaluation.chunks.filter(stream="stdout").order_by("seq"))


def listed(api, name: str) -> dict:
    return {runtime["name"]: runtime for runtime in api.get(URL).json()}[name]


def test_alices_and_bobs_runs_wait_for_one_build_on_the_builds_queue_then_run(alice_api, bob_api, tiny, monkeypatch):
    first = submit(alice_api, language=tiny.name, code="print('first')")
    second = submit(bob_api, language=tiny.name, code="print('second')")
    assert (first.status_code, second.status_code) == (201, 201)
    assert (first.json()["status"], second.json()["status"]) == ("queued", "queued")
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    assert (build.status, build.phase, build.requested_by) == (BuildStatus.QUEUED, BuildPhase.WAITING, "submission")
    assert builds.queue().job_ids == [builds.job_id(build.pk)]  # one build job for both runs

    work_off_queues()  # the run workers have nothing to do: the runs are on no queue yet
    assert set(Evaluation.objects.values_list("status", "awaiting_runtime")) == {(Status.QUEUED, True)}
    assert listed(alice_api, tiny.name)["available"] is False
    assert listed(alice_api, tiny.name)["build"]["status"] == "queued"

    monkeypatch.setattr(image, "build_runtime", tiny_builder)  # what the builder's job builds with
    SimpleWorker([builds.queue()], connection=builds.queue().connection).work(burst=True, with_scheduler=False)
    build.refresh_from_db()
    assert (build.status, build.phase, build.attempts) == (BuildStatus.SUCCEEDED, BuildPhase.DONE, 1)
    assert "I: Retrieving InRelease" in build.log_tail
    assert "s3cret" not in build.log_tail and "http://***@mirror.example" in build.log_tail
    assert not Evaluation.objects.filter(awaiting_runtime=True).exists()

    work_off_queues()
    runs = {e.code: e for e in Evaluation.objects.all()}
    assert stdout_of(runs["print('first')"]) == b"first\n" and stdout_of(runs["print('second')"]) == b"second\n"
    assert {e.status for e in runs.values()} == {Status.SUCCEEDED}
    shown = listed(alice_api, tiny.name)
    assert (shown["available"], shown["build"]["status"], shown["build"]["phase"]) == (True, "succeeded", "done")


def test_while_it_builds_a_second_builder_cannot_claim_it_and_the_list_shows_its_progress(alice_api, olivia_api, tiny):
    response = olivia_api.post(f"{URL}{tiny.name}/build/")
    assert response.status_code == 202 and response.json()["build"]["status"] == "queued"
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    go_on = threading.Event()

    def slow_builder(definition, progress):
        progress(BuildPhase.DEBOOTSTRAP, "I: Retrieving Packages")
        go_on.wait(60)
        return tiny_builder(definition, progress)

    outcome = []

    def first_builder():
        try:
            outcome.append(builds.run(build.pk, builder=slow_builder, name="builder-one"))
        finally:
            connection.close()

    thread = threading.Thread(target=first_builder)
    thread.start()
    try:
        wait_for(lambda: RuntimeBuild.objects.filter(pk=build.pk, phase=BuildPhase.DEBOOTSTRAP).exists())
        assert builds.run(build.pk, builder=tiny_builder, name="builder-two") == builds.RunDisposition.NOT_CLAIMED
        assert builds.claim(build.pk, "builder-three") is None
        shown = listed(alice_api, tiny.name)["build"]
        assert (shown["status"], shown["phase"], shown["log_tail"]) == (
            "building",
            "debootstrap",
            ["I: Retrieving Packages"],
        )
        assert isinstance(shown["elapsed_s"], int) and shown["error"] is None
        waiting = submit(alice_api, language=tiny.name, code="print('waited')")
        assert waiting.status_code == 201
        assert Evaluation.objects.get(pk=waiting.json()["id"]).awaiting_runtime
    finally:
        go_on.set()
        thread.join(60)
    assert outcome == [builds.RunDisposition.SUCCEEDED]
    assert RuntimeBuild.objects.get(pk=build.pk).builder == "builder-one"
    work_off_queues()
    evaluation = Evaluation.objects.get(pk=waiting.json()["id"])
    assert (evaluation.status, stdout_of(evaluation)) == (Status.SUCCEEDED, b"waited\n")


def test_a_failed_build_ends_the_waiting_runs_in_error_and_refuses_new_ones_until_an_operator_retries(
    alice_api, bob_api, olivia_api, tiny
):
    waiting = submit(alice_api, language=tiny.name, code="print('never')").json()
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    assert builds.run(build.pk, builder=failing_builder) == builds.RunDisposition.FAILED

    ended = Evaluation.objects.get(pk=waiting["id"])
    assert (ended.status, ended.reason, ended.awaiting_runtime) == (Status.ERROR, Reason.ENGINE_ERROR, False)
    assert f"The {tiny.name} runtime's image could not be built" in ended.error
    assert alice_api.get(f"/api/v1/evaluations/{ended.pk}/").json()["reason"] == "engine_error"
    shown = listed(alice_api, tiny.name)["build"]
    assert (shown["status"], shown["phase"]) == ("failed", "debootstrap")
    assert "python3-nosuchthing" in shown["error"] and shown["log_tail"][-1].startswith("E: Couldn't find")

    refused = submit(alice_api, language=tiny.name, code="print('again')")
    assert refused.status_code == 400 and "could not be built" in refused.json()["language"][0]
    assert bob_api.post(f"{URL}{tiny.name}/build/").status_code == 403  # only operators build again

    assert olivia_api.post(f"{URL}{tiny.name}/build/").status_code == 202
    build.refresh_from_db()
    assert (build.status, build.error, build.attempts, build.requested_by) == (BuildStatus.QUEUED, "", 0, "olivia")
    assert builds.run(build.pk, builder=tiny_builder) == builds.RunDisposition.SUCCEEDED
    accepted = submit(alice_api, language=tiny.name, code="print('built')")
    assert accepted.status_code == 201
    assert not Evaluation.objects.get(pk=accepted.json()["id"]).awaiting_runtime  # the image is there: it runs
    work_off_queues()
    assert stdout_of(Evaluation.objects.get(pk=accepted.json()["id"])) == b"built\n"


def test_a_build_whose_builder_died_is_taken_back_and_the_dead_builders_late_writes_count_for_nothing(alice_api, tiny):
    submit(alice_api, language=tiny.name, code="print('patient')")
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    dead = builds.claim(build.pk, "builder-that-died")
    assert dead is not None
    stale = timezone.now() - timedelta(seconds=settings.RUNTIME_BUILD_LOST_AFTER_S + 5)
    RuntimeBuild.objects.filter(pk=build.pk).update(heartbeat_at=stale, phase=BuildPhase.DEBOOTSTRAP)

    assert f"build of {tiny.name} taken back" in reconciler.reconcile()["builds"]
    build.refresh_from_db()
    assert (build.status, build.claim, build.attempts) == (BuildStatus.QUEUED, None, 1)
    assert builds.queue().job_ids == [builds.job_id(build.pk)]
    assert builds.Reporter(build.pk, dead).write() is False  # the dead builder's claim is gone

    assert builds.run(build.pk, builder=tiny_builder) == builds.RunDisposition.SUCCEEDED
    work_off_queues()
    assert Evaluation.objects.get().status == Status.SUCCEEDED


def test_a_build_lost_on_each_of_its_attempts_fails_and_ends_its_waiting_runs(alice_api, tiny):
    waiting = submit(alice_api, language=tiny.name, code="print('x')").json()
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    stale = timezone.now() - timedelta(seconds=settings.RUNTIME_BUILD_LOST_AFTER_S + 5)
    for _ in range(builds.MAX_ATTEMPTS):
        assert builds.claim(build.pk, "builder-that-died") is not None
        RuntimeBuild.objects.filter(pk=build.pk).update(heartbeat_at=stale)
        reconciler.reconcile()
    build.refresh_from_db()
    assert build.status == BuildStatus.FAILED and "builder stopped" in build.error
    assert Evaluation.objects.get(pk=waiting["id"]).status == Status.ERROR


def test_a_run_a_worker_takes_before_its_runtime_has_an_image_waits_for_the_build_instead_of_failing(
    alice_api, tiny, settings
):
    """A web role without an engine accepts the run (it cannot know); the worker that takes it parks it."""
    engine_host = settings.DOCKER_HOST
    settings.DOCKER_HOST = "unix:///nonexistent/docker.sock"
    engine.reset()
    runtimes._seen.clear()
    try:
        response = submit(alice_api, language=tiny.name, code="print('parked')")
    finally:
        settings.DOCKER_HOST = engine_host
        engine.reset()
        runtimes._seen.clear()
    assert response.status_code == 201
    assert not Evaluation.objects.get(pk=response.json()["id"]).awaiting_runtime  # on a run queue
    assert not RuntimeBuild.objects.exists()

    work_off_queues()  # the worker finds no image: the run waits, the build is requested
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    assert (evaluation.status, evaluation.awaiting_runtime, evaluation.attempts) == (Status.QUEUED, True, 0)
    build = RuntimeBuild.objects.get(runtime__name=tiny.name)
    assert (build.status, build.requested_by) == (BuildStatus.QUEUED, "run")

    assert builds.run(build.pk, builder=tiny_builder) == builds.RunDisposition.SUCCEEDED
    work_off_queues()
    evaluation.refresh_from_db()
    assert (evaluation.status, stdout_of(evaluation)) == (Status.SUCCEEDED, b"parked\n")


def test_with_builds_on_demand_off_a_runtime_without_an_image_is_a_400_as_before(alice_api, tiny, settings):
    settings.RUNTIME_BUILD_ON_DEMAND = False
    response = submit(alice_api, language=tiny.name, code="print(1)")
    assert response.status_code == 400 and "not available" in response.json()["language"][0]
    assert not RuntimeBuild.objects.exists()


def test_only_the_repositorys_runtime_images_are_built_here(olivia_api, tiny):
    Runtime.objects.filter(name=tiny.name).update(image="someone/elses:image")
    response = olivia_api.post(f"{URL}{tiny.name}/build/")
    assert response.status_code == 400 and "not one this server builds" in response.json()["detail"]
    assert olivia_api.post(f"{URL}no-such-runtime/build/").status_code == 404


def test_the_form_and_the_dashboard_show_the_build_and_poll_only_while_it_runs(client, alice, olivia, tiny):
    client.force_login(alice)
    form = client.get("/evaluations/new/").content.decode()
    assert f'data-runtime="{tiny.name}" data-build-status="missing"' in form
    assert "the first run waits minutes" in form and 'hx-trigger="every 3s"' not in form
    waiting, _ = services.submit(alice, {"code": "print(1)", "language": tiny.name})
    assert 'id="awaiting-runtime"' in client.get(f"/evaluations/{waiting.pk}/").content.decode()

    build = builds.request(Runtime.objects.get(name=tiny.name), by="olivia", again=True)
    token = builds.claim(build.pk, "builder-one")
    reporter = builds.Reporter(build.pk, token)
    reporter(BuildPhase.DEBOOTSTRAP, "I: Retrieving Packages <script>alert(1)</script>")
    panel = client.get("/evaluations/runtime-builds/").content.decode()
    assert 'hx-get="/evaluations/runtime-builds/" hx-trigger="every 3s"' in panel
    assert 'data-build-status="building"' in panel and "debootstrap" in panel
    assert "I: Retrieving Packages &lt;script&gt;" in panel and "<script>alert" not in panel

    client.force_login(olivia)
    dashboard = client.get("/monitoring/live/").content.decode()
    assert f'data-runtime="{tiny.name}" data-build-status="building"' in dashboard

    reporter(BuildPhase.IMPORT, "")
    builds._succeeded(build, token, reporter, tiny_builder(tiny, reporter))
    client.force_login(alice)
    panel = client.get("/evaluations/runtime-builds/").content.decode()
    assert 'data-build-status="succeeded"' in panel and "hx-trigger" not in panel  # done: it stops polling
