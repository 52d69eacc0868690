"""Submit through the API, run on the real Docker engine, read the record back. The contract end to end."""

import asyncio
import signal
import time
import uuid

import django_rq
import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from django.db import connections
from django.db.models import Max
from rq import SimpleWorker

from apps.accounts.models import Quota
from apps.evaluations import publisher, recording, running
from apps.evaluations.models import Evaluation, Reason, Runtime, Status
from apps.evaluations.running import RunDisposition
from apps.evaluations.tests import helpers
from apps.evaluations.tests.factories import add_chunk, make_evaluation
from apps.evaluations.tests.helpers import Background, run_and_wait, submit, wait_for, wait_for_status
from apps.evaluations.worker import warm_profiles
from apps.monitoring.models import RunTiming
from apps.sandboxing import pool

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_queues")]


def _output(evaluation, stream=None) -> bytes:
    chunks = evaluation.chunks.order_by("seq")
    if stream:
        chunks = chunks.filter(stream=stream)
    return b"".join(bytes(c.data) for c in chunks)


def test_hello_world_succeeds_with_its_output_and_the_image_it_ran_on(alice_api):
    evaluation = run_and_wait(alice_api, code="print('hello, world')")
    assert (evaluation.status, evaluation.reason, evaluation.exit_code) == (Status.SUCCEEDED, Reason.EXIT, 0)
    assert _output(evaluation) == b"hello, world\n"
    assert evaluation.image_digest.startswith("sha256:")
    assert evaluation.started_at and evaluation.finished_at and evaluation.duration_ms is not None
    logs = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/").json()
    assert logs["complete"] is True
    assert "".join(c["data"] for c in logs["chunks"]) == "hello, world\n"


def test_the_workers_end_tells_the_viewers_that_the_whole_output_is_stored(alice_api):
    """So a viewer that has every chunk sends the end without asking the database how far it is stored."""
    evaluation_id = submit(
        alice_api, code="import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)"
    ).json()["id"]

    async def watch_it_run() -> dict:
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)  # a viewer's own, as in another process
        viewer = await layer.new_channel()
        await layer.group_add(publisher.group_name(evaluation_id), viewer)
        with Background(evaluation_id):  # the worker's job, in a thread
            pass
        while True:
            message = await asyncio.wait_for(layer.receive(viewer), timeout=10)
            if message["type"] == "evaluation.event" and message["event"]["type"] == "end":
                return message

    end = asyncio.run(watch_it_run())
    evaluation = Evaluation.objects.get(pk=evaluation_id)
    assert evaluation.status == Status.SUCCEEDED and _output(evaluation) == b"0\n1\n2\n"
    assert end["stored_seq"] == evaluation.chunks.aggregate(last=Max("seq"))["last"] >= 1


class StoredMarks:
    """The stored marks the recorder publishes, and the ``stored_seq`` of the end (the real publishers run)."""

    def __init__(self, monkeypatch):
        self.marks, self.ends = [], []
        publish_stored, publish_end = recording.publisher.publish_stored, running.publisher.publish_end

        def stored(evaluation_id, seq):
            self.marks.append(seq)
            publish_stored(evaluation_id, seq)

        def end(evaluation, stored_seq=None):
            self.ends.append(stored_seq)
            publish_end(evaluation, stored_seq=stored_seq)

        monkeypatch.setattr(recording.publisher, "publish_stored", stored)
        monkeypatch.setattr(running.publisher, "publish_end", end)


def test_a_short_runs_output_is_stored_with_its_end_in_one_commit(alice_api, monkeypatch):
    """No stored mark of its own: the end says how far the output is stored, and a viewer never reads
    an end whose output is not there yet."""
    monkeypatch.setattr(recording, "FLUSH_INTERVAL_S", 30.0)  # shorter than a batch's interval, however slow
    published = StoredMarks(monkeypatch)
    evaluation = run_and_wait(alice_api, code="print('one line')")
    assert evaluation.status == Status.SUCCEEDED and _output(evaluation) == b"one line\n"
    last_seq = evaluation.chunks.aggregate(last=Max("seq"))["last"]
    assert published.marks == [] and published.ends == [last_seq] and last_seq >= 1


def test_an_end_whose_last_chunks_were_stored_already_is_recorded_with_each_chunk_once(alice_api, monkeypatch):
    """The batch's earlier write reached the database but its answer was lost: the end's transaction
    finds the seqs taken, and the recorder tells its own chunks from another attempt's."""
    insert_unstored = recording.OutputRecorder.insert_unstored

    def stored_elsewhere_first(recorder):
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                for chunk in recorder._unstored:
                    cursor.execute(
                        "insert into evaluations_outputchunk (evaluation_id, seq, stream, data, created_at)"
                        " values (%s, %s, %s, %s, now())",
                        [chunk.evaluation_id, chunk.seq, chunk.stream, bytes(chunk.data)],
                    )
        finally:
            other.close()
        insert_unstored(recorder)

    monkeypatch.setattr(recording.OutputRecorder, "insert_unstored", stored_elsewhere_first)
    evaluation = run_and_wait(alice_api, code="print('once')")
    assert (evaluation.status, evaluation.exit_code) == (Status.SUCCEEDED, 0)
    assert _output(evaluation) == b"once\n"  # (the engine may hand it over in more than one piece)


def test_every_evaluation_records_the_runtime_its_sandbox_actually_ran_under(alice_api, settings):
    settings.SANDBOX_RUNTIME = "auto"  # the engine has gVisor (make test's set-up registers it)
    under_gvisor = run_and_wait(alice_api, code="print(open('/proc/version').read())")
    settings.SANDBOX_RUNTIME = "runc"
    under_runc = run_and_wait(alice_api, code="print(open('/proc/version').read())")
    assert (under_gvisor.sandbox_runtime, under_runc.sandbox_runtime) == ("runsc", "runc")
    assert alice_api.get(f"/api/v1/evaluations/{under_gvisor.pk}/").json()["sandbox_runtime"] == "runsc"
    assert "4.4.0" in _output(under_gvisor).decode()  # gVisor's kernel, not the host's


def test_a_non_zero_exit_fails_with_that_code(alice_api):
    evaluation = run_and_wait(alice_api, code="import sys; sys.exit(3)")
    assert (evaluation.status, evaluation.reason, evaluation.exit_code) == (Status.FAILED, Reason.EXIT, 3)


def test_bash_runs_too(alice_api):
    evaluation = run_and_wait(alice_api, language="bash", code="echo $((6*7)); exit 0")
    assert evaluation.status == Status.SUCCEEDED
    assert _output(evaluation) == b"42\n"


def test_stdin_is_delivered_and_stderr_is_told_apart(alice_api):
    code = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper())\nprint('warn', file=sys.stderr)"
    evaluation = run_and_wait(alice_api, code=code, stdin="a\nb\n")
    assert _output(evaluation, "stdout") == b"A\nB\n"
    assert _output(evaluation, "stderr") == b"warn\n"


def test_a_program_that_sleeps_too_long_times_out(alice_api):
    started = time.monotonic()
    evaluation = run_and_wait(alice_api, code="import time; time.sleep(60)", timeout_s=1.5)
    assert (evaluation.status, evaluation.reason) == (Status.TIMED_OUT, Reason.TIMEOUT)
    assert time.monotonic() - started < 15


def test_a_memory_bomb_is_oom_killed(alice_api):
    code = "x = []\nwhile True:\n    x.append(bytearray(16 * 1024 * 1024))"
    evaluation = run_and_wait(alice_api, code=code, memory_mb=64, timeout_s=10)
    assert (evaluation.status, evaluation.reason) == (Status.OOM_KILLED, Reason.OOM)


def test_an_output_flood_keeps_the_cap_is_marked_truncated_and_fails_for_that_reason(alice_api, settings):
    settings.SANDBOX_OUTPUT_CAP_BYTES = 64 * 1024
    evaluation = run_and_wait(alice_api, code="while True:\n    print('y' * 1000)", timeout_s=10)
    assert evaluation.output_truncated is True
    assert (evaluation.status, evaluation.reason) == (Status.FAILED, Reason.OUTPUT_CAP)
    # The runner stopped it: the program has no exit code of its own, and none is made up.
    assert (evaluation.exit_code, evaluation.signal) == (None, None)
    assert len(_output(evaluation)) == 64 * 1024
    assert "output cap" in evaluation.error


def test_files_written_to_the_output_directory_become_artifacts(alice_api):
    code = "import os\nd = os.environ['CRUCIBLE_OUTPUT_DIR']\nopen(os.path.join(d, 'result.txt'), 'w').write('42\\n')\n"
    evaluation = run_and_wait(alice_api, code=code)
    assert evaluation.status == Status.SUCCEEDED, evaluation.error
    listing = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/").json()
    assert [(a["name"], a["size"]) for a in listing] == [("result.txt", 3)]
    download = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/result.txt")
    assert download.content == b"42\n"


def test_cancelling_a_running_evaluation_ends_it_cancelled_within_the_grace(alice_api):
    response = submit(alice_api, code="import time\nprint('started', flush=True)\ntime.sleep(60)", timeout_s=30)
    evaluation_id = response.json()["id"]
    with Background(evaluation_id):
        wait_for(lambda: Evaluation.objects.get(pk=evaluation_id).chunks.exists())
        assert alice_api.delete(f"/api/v1/evaluations/{evaluation_id}/").status_code == 202
        evaluation = wait_for_status(evaluation_id, Status.CANCELLED, timeout=15)
    assert _output(evaluation) == b"started\n"
    assert evaluation.reason == Reason.CANCELLED
    # It died of the SIGTERM, within the grace: the SIGKILL that ends the grace was never needed.
    assert evaluation.signal == signal.SIGTERM


def test_a_program_that_ignores_sigterm_is_still_cancelled(alice_api):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    evaluation_id = submit(alice_api, code=code, timeout_s=30).json()["id"]
    with Background(evaluation_id):
        wait_for(lambda: Evaluation.objects.get(pk=evaluation_id).chunks.exists())
        alice_api.delete(f"/api/v1/evaluations/{evaluation_id}/")
        evaluation = wait_for_status(evaluation_id, Status.CANCELLED, timeout=15)
    assert evaluation.signal == signal.SIGKILL  # the end of the grace


def test_an_emergency_stop_kills_at_once_without_the_sigterm_grace(alice_api):
    # A cancel would send SIGTERM first; this program reports it. A stop is SIGKILL: nothing to report.
    code = (
        "import signal, sys, time\n"
        "def report(*_):\n"
        "    print('got SIGTERM', flush=True)\n"
        "    time.sleep(60)\n"
        "signal.signal(signal.SIGTERM, report)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    evaluation_id = submit(alice_api, code=code, timeout_s=60).json()["id"]
    with Background(evaluation_id):
        wait_for(lambda: Evaluation.objects.get(pk=evaluation_id).chunks.exists())
        assert alice_api.post(f"/api/v1/evaluations/{evaluation_id}/stop/").status_code == 202
        # Well before the program's own end (60 s) or its timeout: the stop did it.
        evaluation = wait_for_status(evaluation_id, Status.STOPPED, timeout=20)
    assert evaluation.reason == Reason.STOPPED
    assert _output(evaluation) == b"up\n"


def test_a_duplicate_job_for_the_same_evaluation_does_nothing(alice_api):
    evaluation = run_and_wait(alice_api, code="print('once')")
    assert running.run(str(evaluation.pk)) == RunDisposition.NOT_CLAIMED
    assert _output(evaluation) == b"once\n"


def test_alices_retried_run_numbers_its_output_after_what_her_first_attempt_left(alice):
    evaluation = make_evaluation(alice, code="print('second attempt')", attempts=1)
    add_chunk(evaluation, 1, b"first attempt\n")
    add_chunk(evaluation, 2, b"[crucible] the worker was lost; running again\n", stream="stderr")
    assert running.run(str(evaluation.pk)) == RunDisposition.FINISHED
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.attempts) == (Status.SUCCEEDED, 2)
    chunks = list(evaluation.chunks.order_by("seq").values_list("seq", "data"))
    assert [seq for seq, _ in chunks] == list(range(1, len(chunks) + 1))
    assert b"".join(bytes(data) for seq, data in chunks if seq > 2) == b"second attempt\n"


def test_a_submission_for_a_runtime_whose_image_is_not_built_is_refused_with_a_clear_400(alice_api):
    Runtime.objects.create(
        name="ghost", image="crucible-sandbox:does-not-exist", command=["python3", "{file}"], file_name="main.py"
    )
    response = submit(alice_api, language="ghost", code="print(1)")
    assert response.status_code == 400
    assert "not available" in response.json()["language"][0]
    assert "build_sandbox_image --runtime ghost" in response.json()["language"][0]
    assert not Evaluation.objects.exists()


def test_a_runtime_whose_image_went_missing_after_submission_ends_in_error_and_never_runs_weaker(alice_api):
    ghost = Runtime.objects.create(name="ghost", image="", command=["python3", "{file}"], file_name="main.py")
    response = submit(alice_api, language="ghost", code="print(1)")
    assert response.status_code == 201, response.content
    Runtime.objects.filter(pk=ghost.pk).update(image="crucible-sandbox:does-not-exist")
    helpers.work_off_queues()
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    assert (evaluation.status, evaluation.reason) == (Status.ERROR, Reason.ENGINE_ERROR)
    assert evaluation.error
    assert not evaluation.chunks.exists()


def test_high_priority_runs_before_normal_and_low(alice_api, alice):
    Quota.objects.create(user=alice, high_priority=True)
    low = submit(alice_api, code="print('low')", priority="low").json()["id"]
    high = submit(alice_api, code="print('high')", priority="high").json()["id"]
    helpers.work_off_queues()
    low_row, high_row = Evaluation.objects.get(pk=low), Evaluation.objects.get(pk=high)
    assert high_row.started_at < low_row.started_at


def test_with_a_warm_pool_a_run_takes_an_idle_sandbox_and_it_goes_with_the_run(alice_api, settings):
    settings.SANDBOX_POOL_SIZE = 1
    name = f"pooled-{uuid.uuid4().hex[:8]}"
    pool.WarmPool(name, 2, warm_profiles).refill_once()
    try:
        response = submit(alice_api, code="print('warm')")
        queues = [django_rq.get_queue(queue) for queue in settings.RQ_QUEUES]
        SimpleWorker(queues, connection=queues[0].connection, name=name).work(burst=True, with_scheduler=False)
        evaluation = Evaluation.objects.get(pk=response.json()["id"])
        assert (evaluation.status, _output(evaluation)) == (Status.SUCCEEDED, b"warm\n")
        assert RunTiming.objects.get(evaluation_id=evaluation.pk).warm is True
        assert len(pool.idle(name)) == 1  # the one it used was removed with the run
    finally:
        pool.remove_pools_of(name)
