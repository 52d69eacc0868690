"""GET …/logs/?format=text (or Accept: text/plain): the output as a plain-text download."""

import pytest

from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_chunk, make_evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluation(alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    add_chunk(evaluation, 1, b"out 1\n")
    add_chunk(evaluation, 2, b"err \xff\x00 1\n", "stderr")
    add_chunk(evaluation, 3, b"\x1b[1mout 2\x1b[0m\n")
    return evaluation


def text_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_format_text_gives_both_streams_as_stored_as_an_attachment(alice_api, evaluation):
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="evaluation-{str(evaluation.pk)[:8]}-both.txt"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert text_of(response) == b"out 1\nerr \xff\x00 1\n\x1b[1mout 2\x1b[0m\n"


def test_accept_text_plain_is_answered_with_text_instead_of_406(alice_api, evaluation):
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/", HTTP_ACCEPT="text/plain")
    assert response.status_code == 200
    assert text_of(response).startswith(b"out 1\n")


@pytest.mark.parametrize(
    ("stream", "expected"),
    [("stdout", b"out 1\n\x1b[1mout 2\x1b[0m\n"), ("stderr", b"err \xff\x00 1\n")],
)
def test_one_stream_can_be_picked(alice_api, evaluation, stream, expected):
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text&stream={stream}")
    assert text_of(response) == expected
    assert f"-{stream}.txt" in response["Content-Disposition"]


def test_a_long_log_comes_whole_across_pages_of_chunks(alice_api, alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED)
    for seq in range(1, 2502):
        add_chunk(evaluation, seq, f"{seq}\n".encode())
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text")
    assert text_of(response) == "".join(f"{seq}\n" for seq in range(1, 2502)).encode()


def test_an_unknown_stream_is_a_400_naming_it(alice_api, evaluation):
    response = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text&stream=stdin")
    assert response.status_code == 400
    assert b"stream" in response.content


def test_json_stays_the_default(alice_api, evaluation):
    body = alice_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/").json()
    assert [chunk["seq"] for chunk in body["chunks"]] == [1, 2, 3]


def test_another_users_log_is_a_404_as_text_too(bob_api, evaluation):
    assert bob_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text").status_code == 404


def test_an_operator_may_download_anyones_log(olivia_api, evaluation):
    assert olivia_api.get(f"/api/v1/evaluations/{evaluation.pk}/logs/?format=text").status_code == 200
