"""The output recorder: ordered chunks, stream changes kept exactly, small writes coalesced, each chunk
published only once it is stored, and a second attempt's rows never overwritten.

The recorder is driven as a run drives it: ``write`` for each piece, ``flush_all`` at the end.
"""

import pytest
from django.db import connections

from apps.evaluations import recording
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import add_chunk, make_evaluation

pytestmark = pytest.mark.django_db


def _rows(evaluation):
    return list(evaluation.chunks.order_by("seq").values_list("seq", "stream", "data"))


def test_consecutive_writes_of_one_stream_become_one_chunk(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    for n in range(100):
        recorder.write("stdout", f"{n}\n".encode())
    recorder.flush_all()
    rows = _rows(evaluation)
    assert len(rows) < 100
    assert b"".join(bytes(r[2]) for r in rows) == b"".join(f"{n}\n".encode() for n in range(100))
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))


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
    assert len(_rows(evaluation)) == 1  # flushed without waiting for the end
    assert recorder.total_bytes == 25


def test_nul_and_invalid_utf8_are_stored_as_bytes_unchanged(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"\x00\xff\xfe<script>")
    recorder.flush_all()
    assert bytes(_rows(evaluation)[0][2]) == b"\x00\xff\xfe<script>"


@pytest.mark.django_db(transaction=True)
def test_each_chunk_is_published_only_after_it_is_committed(alice, monkeypatch):
    """A viewer who reconnects on a published seq must find it stored: so the commit comes first."""
    evaluation = make_evaluation(alice, status="running")
    other = connections.create_connection("default")  # another session sees committed rows only
    seen = []

    def publish_log(evaluation_id, seq, stream, text):
        with other.cursor() as cursor:
            cursor.execute(
                "select stream, data from evaluations_outputchunk where evaluation_id = %s and seq = %s",
                [evaluation_id, seq],
            )
            stored = cursor.fetchone()
        seen.append((seq, text, None if stored is None else (stored[0], bytes(stored[1]).decode())))

    monkeypatch.setattr(recording.publisher, "publish_log", publish_log)
    recorder = OutputRecorder(evaluation.pk)
    try:
        recorder.write("stdout", b"hi\n")
        recorder.write("stderr", b"oops\n")
        recorder.flush_all()
    finally:
        other.close()
    assert seen == [(1, "hi\n", ("stdout", "hi\n")), (2, "oops\n", ("stderr", "oops\n"))]


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
    assert [bytes(data) for _, _, data in _rows(evaluation)] == [b"the new attempt's output\n"]
