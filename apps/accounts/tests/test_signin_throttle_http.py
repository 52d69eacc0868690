"""Adversarial case 31 as the red team ran it: password guesses over real HTTP against a running server
(pytest-django's live server, the real PostgreSQL and Redis), on every sign-in path in turn."""

import re

import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True)


def csrf_post(session, url, fields):
    """POST a sign-in form as a browser does: fetch the page for its CSRF token, then submit."""
    page = session.get(url, timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    return session.post(url, data={**fields, "csrfmiddlewaretoken": token}, headers={"Referer": url}, timeout=10)


def test_fifteen_wrong_passwords_on_the_admin_end_in_429(live_server, olivia):
    mallory = requests.Session()
    url = f"{live_server.url}/admin/login/"
    answers = [csrf_post(mallory, url, {"username": "olivia", "password": f"guess-{n}"}) for n in range(15)]
    assert [answer.status_code for answer in answers[:5]] == [200] * 5
    assert {answer.status_code for answer in answers[5:]} == {429}
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert "Too many failed sign-in attempts" in answers[-1].text


def test_the_sign_in_page_and_the_api_refuse_the_same_guesser(live_server, alice):
    mallory = requests.Session()
    url = f"{live_server.url}/accounts/login/"
    for n in range(10):
        csrf_post(mallory, url, {"login": f"someone{n}", "password": "guess"})
    assert csrf_post(mallory, url, {"login": "alice", "password": "alice-password-1"}).status_code == 429
    answer = requests.get(f"{live_server.url}/api/v1/me/", headers={"Authorization": "Token cru_a-guess"}, timeout=10)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) > 0
    assert "from your network address" in answer.json()["error"]
