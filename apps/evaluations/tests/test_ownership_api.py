"""Another user's evaluation is a 404 everywhere; operators see and act on all; anonymous is 401."""

import pytest

from apps.evaluations.models import Status
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_evaluation(alice):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    add_chunk(evaluation, 1, b"secret output\n")
    add_artifact(evaluation, "result.txt", b"42\n")
    return evaluation


def _endpoints(evaluation):
    base = f"/api/v1/evaluations/{evaluation.pk}/"
    return [
        ("get", base),
        ("get", base + "logs/"),
        ("get", base + "results/"),
        ("get", base + "artifacts/"),
        ("get", base + "artifacts/result.txt"),
        ("delete", base),
        ("post", base + "stop/"),
    ]


def test_bob_gets_404_for_every_endpoint_of_alices_evaluation(bob_api, alices_evaluation):
    for method, url in _endpoints(alices_evaluation):
        response = getattr(bob_api, method)(url)
        assert response.status_code == 404, (method, url, response.status_code)
        assert b"secret" not in response.content


def test_a_missing_evaluation_looks_the_same_as_someone_elses(bob_api, alices_evaluation):
    theirs = bob_api.get(f"/api/v1/evaluations/{alices_evaluation.pk}/")
    missing = bob_api.get("/api/v1/evaluations/00000000-0000-0000-0000-000000000000/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()


def test_anonymous_gets_401_everywhere(anonymous_api, alices_evaluation):
    for method, url in [*_endpoints(alices_evaluation), ("get", "/api/v1/evaluations/")]:
        assert getattr(anonymous_api, method)(url).status_code == 401, url


def test_alice_reads_everything_of_her_own(alice_api, alices_evaluation):
    for method, url in _endpoints(alices_evaluation)[:5]:
        assert getattr(alice_api, method)(url).status_code == 200, url


def test_olivia_the_operator_reads_and_acts_on_anyones(olivia_api, alice):
    running = make_evaluation(alice, status=Status.RUNNING)
    assert olivia_api.get(f"/api/v1/evaluations/{running.pk}/").status_code == 200
    assert olivia_api.post(f"/api/v1/evaluations/{running.pk}/stop/").status_code == 202
    running.refresh_from_db()
    assert running.control == "stop"


def test_the_list_shows_alice_only_her_own_newest_first(alice_api, alice, bob):
    older = make_evaluation(alice)
    newer = make_evaluation(alice)
    make_evaluation(bob)
    ids = [row["id"] for row in alice_api.get("/api/v1/evaluations/").json()["results"]]
    assert ids == [str(newer.pk), str(older.pk)]


def test_the_list_shows_olivia_everyones(olivia_api, alice, bob):
    make_evaluation(alice)
    make_evaluation(bob)
    assert olivia_api.get("/api/v1/evaluations/").json()["count"] == 2


def test_the_list_filters_by_status_and_searches(alice_api, alice):
    make_evaluation(alice, status=Status.FAILED, code="import numpy")
    make_evaluation(alice, status=Status.SUCCEEDED, code="print('needle')")
    assert alice_api.get("/api/v1/evaluations/?status=failed").json()["count"] == 1
    found = alice_api.get("/api/v1/evaluations/?q=needle").json()["results"]
    assert [row["status"] for row in found] == ["succeeded"]


def test_an_unknown_status_filter_is_400(alice_api):
    response = alice_api.get("/api/v1/evaluations/?status=bogus")
    assert response.status_code == 400
    assert "status" in response.json()


def test_a_page_of_the_list_costs_a_fixed_number_of_queries(alice_api, alice, django_assert_max_num_queries):
    for _ in range(30):
        make_evaluation(alice)
    with django_assert_max_num_queries(6):
        assert alice_api.get("/api/v1/evaluations/").status_code == 200
