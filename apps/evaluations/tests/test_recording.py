"""The output recorder: each piece of output published at once as the next chunk, chunks stored in
batches followed by a stored mark, and a second attempt's rows never overwritten.

The recorder is driven as a run drives it: ``write`` for each piece, ``flush_all`` at the end.
"""

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from apps.evaluations import recording
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import add_chunk, make_evaluation

pytestmark = pytest.mark.django_db


def _rows(evaluation):
    return list(evaluation.chunks.order_by("seq").values_list("seq", "stream", "data"))


class Published:
    """What the recorder publishes, in order: ("log", seq, stream, text) and ("stored", seq)."""

    def __init__(self, monkeypatch):
        self.events = []
        monkeypatch.setattr(recording.publisher, "publish_log", self.log)
        monkeypatch.setattr(recording.publisher, "publish_stored", self.stored)

    def log(self, evaluation_id, seq, stream, text):
        self.events.append(("log", seq, stream, text))

    def stored(self, evaluation_id, seq):
        self.events.append(("stored", seq))


def test_each_write_is_published_at_once_as_the_next_chunk_before_anything_is_stored(alice, monkeypatch):
    evaluation = make_evaluation(alice, status="running")
    published = Published(monkeypatch)
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"one\n")
    recorder.write("stdout", b"two\n")
    assert published.events == [("log", 1, "stdout", "one\n"), ("log", 2, "stdout", "two\n")]
    assert _rows(evaluation) == []  # stored with the next batch, not before it is seen


def test_a_batch_of_chunks_is_stored_in_one_insert_then_marked_stored(alice, monkeypatch):
    evaluation = make_evaluation(alice, status="running")
    published = Published(monkeypatch)
    recorder = OutputRecorder(evaluation.pk)
    for n in range(100):
        recorder.write("stdout", f"{n}\n".encode())
    with CaptureQueriesContext(connection) as queries:
        recorder.flush_all()
    assert len([q for q in queries.captured_queries if q["sql"].startswith("INSERT")]) == 1
    rows = _rows(evaluation)
    assert [(seq, bytes(data)) for seq, _, data in rows] == [(n + 1, f"{n}\n".encode()) for n in range(100)]
    assert published.events[-1] == ("stored", 100)
    assert [event[1] for event in published.events[:-1]] == list(range(1, 101))


def test_chunks_are_stored_once_the_batch_reaches_its_count(alice, monkeypatch):
    monkeypatch.setattr(recording, "FLUSH_CHUNKS", 3)
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    for n in range(4):
        recorder.write("stdout", f"{n}\n".encode())
    assert [row[0] for row in _rows(evaluation)] == [1, 2, 3]  # the fourth waits for the next batch
    assert (recorder.seq, recorder.stored_seq) == (4, 3)


def test_a_line_written_as_the_run_ends_waits_for_the_ends_commit_however_old_the_batch(alice, monkeypatch):
    monkeypatch.setattr(recording, "FLUSH_INTERVAL_S", 0.0)  # any batch is due
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stderr", b"[crucible] test 1/1: check\n")
    assert [row[0] for row in _rows(evaluation)] == [1]  # stored as it came: due at once
    recorder.write("stderr", b"[crucible] test 1 check: passed\n", ending=True)
    assert [row[0] for row in _rows(evaluation)] == [1]  # not a batch of its own
    with transaction.atomic():  # the end's transaction
        recorder.insert_unstored()
    recorder.committed()
    assert [row[0] for row in _rows(evaluation)] == [1, 2]
    assert (recorder.seq, recorder.stored_seq) == (2, 2)


def test_a_change_of_stream_starts_a_new_chunk_so_order_is_exact(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"a")
    recorder.write("stderr", b"b")
    recorder.write("stdout", b"c")
    recorder.flush_all()
    assert [(seq, stream, bytes(data)) for seq, stream, data in _rows(evaluation)] == [
        (1, "stdout", b"a"),
        (2, "stderr", b"b"),
        (3, "stdout", b"c"),
    ]


def test_big_writes_are_flushed_at_the_size_threshold(alice, monkeypatch):
    monkeypatch.setattr(recording, "FLUSH_BYTES", 10)
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"x" * 25)
    assert len(_rows(evaluation)) == 1  # stored without waiting for the end
    assert recorder.total_bytes == 25


def test_nul_and_invalid_utf8_are_stored_as_bytes_unchanged(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"\x00\xff\xfe<script>")
    recorder.flush_all()
    assert bytes(_rows(evaluation)[0][2]) == b"\x00\xff\xfe<script>"


@pytest.mark.django_db(transaction=True)
def test_the_stored_mark_is_published_only_after_its_batch_is_committed(alice, monkeypatch):
    """A viewer holding live chunks reads the database on the mark: the batch must be visible then."""
    evaluation = make_evaluation(alice, status="running")
    other = connections.create_connection("default")  # another session sees committed rows only
    seen = []

    def publish_stored(evaluation_id, seq):
        with other.cursor() as cursor:
            cursor.execute(
                "select seq, stream from evaluations_outputchunk where evaluation_id = %s order by seq",
                [evaluation_id],
            )
            seen.append((seq, cursor.fetchall()))

    monkeypatch.setattr(recording.publisher, "publish_stored", publish_stored)
    recorder = OutputRecorder(evaluation.pk)
    try:
        recorder.write("stdout", b"hi\n")
        recorder.write("stderr", b"oops\n")
        recorder.flush_all()
    finally:
        other.close()
    assert seen == [(2, [(1, "stdout"), (2, "stderr")])]


def test_a_retried_attempt_continues_the_seq_numbers_after_the_earlier_output(alice):
    evaluation = make_evaluation(alice, status="running")
    add_chunk(evaluation, 1, b"first attempt\n")
    add_chunk(evaluation, 2, b"[crucible] notice\n", stream="stderr")
    recorder = OutputRecorder(evaluation.pk, start_seq=2)
    recorder.write("stdout", b"second attempt\n")
    recorder.flush_all()
    assert [(seq, bytes(data)) for seq, _, data in _rows(evaluation)][-1] == (3, b"second attempt\n")


def test_a_chunk_whose_commit_answer_was_lost_is_not_written_twice(alice):
    # The write reached the database but its answer did not: the retry finds its own chunk there.
    evaluation = make_evaluation(alice, status="running")
    add_chunk(evaluation, 1, b"hi\n")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"hi\n")
    recorder.write("stderr", b"then this\n")
    recorder.flush_all()
    assert recorder.superseded is False
    assert [(seq, bytes(data)) for seq, _, data in _rows(evaluation)] == [(1, b"hi\n"), (2, b"then this\n")]


def test_a_recorder_whose_seq_another_attempt_took_stops_writing(alice):
    evaluation = make_evaluation(alice, status="running")
    add_chunk(evaluation, 1, b"the new attempt's output\n")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"the old attempt's output\n")
    recorder.flush_all()
    recorder.write("stdout", b"more from the old attempt\n")
    recorder.flush_all()
    assert recorder.superseded is True
    assert recorder.seq == 0  # the seqs it handed out are not its own: nothing follows them
    assert [bytes(data) for _, _, data in _rows(evaluation)] == [b"the new attempt's output\n"]


def test_chunks_inserted_in_a_transaction_that_rolled_back_are_still_unstored(alice, monkeypatch):
    """The run's end inserts its last chunks in its own transaction; an outage rolls it back, and the
    chunks are stored with the next attempt, not lost nor counted as stored."""
    evaluation = make_evaluation(alice, status="running")
    published = Published(monkeypatch)
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"last words\n")
    with pytest.raises(RuntimeError), transaction.atomic():
        recorder.insert_unstored()
        raise RuntimeError("the connection dropped before the commit")
    assert (_rows(evaluation), recorder.stored_seq) == ([], 0)
    with transaction.atomic():
        recorder.insert_unstored()
    recorder.committed()
    assert [bytes(data) for _, _, data in _rows(evaluation)] == [b"last words\n"]
    assert recorder.stored_seq == 1 and published.events == [("log", 1, "stdout", "last words\n")]
