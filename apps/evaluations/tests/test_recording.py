"""The output recorder: ordered chunks, stream changes kept exactly, small writes coalesced."""

import pytest

from apps.evaluations import recording
from apps.evaluations.recording import OutputRecorder
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db


def _rows(evaluation):
    return list(evaluation.chunks.order_by("seq").values_list("seq", "stream", "data"))


def test_consecutive_writes_of_one_stream_become_one_chunk(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    for n in range(100):
        recorder.write("stdout", f"{n}\n".encode())
    recorder.flush()
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
    recorder.flush()
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
    assert len(_rows(evaluation)) == 1  # flushed without waiting for flush()
    assert recorder.total_bytes == 25


def test_nul_and_invalid_utf8_are_stored_as_bytes_unchanged(alice):
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"\x00\xff\xfe<script>")
    recorder.flush()
    assert bytes(_rows(evaluation)[0][2]) == b"\x00\xff\xfe<script>"


def test_each_chunk_is_published_after_it_is_stored(alice, monkeypatch):
    published = []
    monkeypatch.setattr(recording.publisher, "publish_log", lambda *args: published.append(args))
    evaluation = make_evaluation(alice, status="running")
    recorder = OutputRecorder(evaluation.pk)
    recorder.write("stdout", b"hi\n")
    recorder.flush()
    assert published == [(evaluation.pk, 1, "stdout", "hi\n")]
