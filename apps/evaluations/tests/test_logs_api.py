"""GET …/logs/?after=N and the artifacts endpoints."""

import pytest

from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation

pytestmark = pytest.mark.django_db


def _logs(api, evaluation, after=None):
    suffix = "" if after is None else f"?after={after}"
    return api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/{suffix}")


def test_chunks_after_n_come_in_order_with_the_next_cursor(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    for seq in (1, 2, 3):
        add_chunk(evaluation, seq, f"line {seq}\n".encode(), "stderr" if seq == 2 else "stdout")
    body = _logs(alice_api, evaluation, after=1).json()
    assert [(c["seq"], c["stream"], c["data"]) for c in body["chunks"]] == [
        (2, "stderr", "line 2\n"),
        (3, "stdout", "line 3\n"),
    ]
    assert body["next"] == 3
    assert body["complete"] is False


def test_a_finished_evaluation_says_complete(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    add_chunk(evaluation, 1, b"done\n")
    body = _logs(alice_api, evaluation).json()
    assert body["complete"] is True
    assert _logs(alice_api, evaluation, after=1).json() == {"chunks": [], "next": 1, "complete": True}


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "9" * 40])
def test_a_bad_after_is_400(alice_api, alice, after):
    evaluation = make_evaluation(alice)
    response = _logs(alice_api, evaluation, after=after)
    assert response.status_code == 400
    assert "after" in response.json()


def test_invalid_utf8_and_nul_bytes_come_back_as_replacement_characters(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    add_chunk(evaluation, 1, b"ok \xff\xfe bad \x00 nul\n")
    data = _logs(alice_api, evaluation).json()["chunks"][0]["data"]
    assert data == "ok \ufffd\ufffd bad \ufffd nul\n"


def test_artifacts_are_listed_with_size_and_hash_and_download_as_attachments(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    add_artifact(evaluation, "report.html", b"<script>alert(1)</script>")
    listing = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/").json()
    assert listing[0]["name"] == "report.html"
    assert listing[0]["size"] == 25
    assert len(listing[0]["sha256"]) == 64
    download = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/report.html")
    assert download.status_code == 200
    assert download.content == b"<script>alert(1)</script>"
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Disposition"].startswith("attachment;")
    assert download["X-Content-Type-Options"] == "nosniff"


def test_a_missing_artifact_is_404(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    assert alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/artifacts/nope.txt").status_code == 404


def test_results_give_the_final_verdict(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.FAILED, exit_code=3, duration_ms=120, peak_memory_bytes=1234)
    body = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/results/").json()
    assert body["status"] == "failed"
    assert body["exit_code"] == 3
    assert body["duration_ms"] == 120
    assert body["peak_memory_bytes"] == 1234
