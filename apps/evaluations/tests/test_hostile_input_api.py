"""Adversarial case 33 over HTTP: input that once gave 500 is a clear 400 naming what was wrong.

Raw bodies are sent as bytes, exactly as an attacker would write them: ``"\\ud800"`` is a lone
surrogate (valid JSON, no valid Unicode), ``1e400`` decodes to infinity, and 5000 nested brackets
pass the request size limit. Nothing of it may reach PostgreSQL or the JSON renderer.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.evaluations.models import Evaluation
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation
from apps.evaluations.tests.helpers import URL

pytestmark = pytest.mark.django_db


def post_raw(api, body: str | bytes, url: str = URL):
    return api.generic("POST", url, body, content_type="application/json")


def messages_of(response) -> str:
    return " ".join(str(value) for value in response.json().values())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"code": "\\ud800"}', "code"),
        ('{"code": "print(1)", "stdin": "a\\udfff"}', "stdin"),
        ('{"code": "print(1)", "metadata": {"run": "\\ud800"}}', "metadata"),
        ('{"code": "print(1)", "metadata": {"\\ud800": 1}}', "metadata"),
        ('{"code": "print(1)", "metadata": {"a\\u0000b": 1}}', "metadata"),
        ('{"code": "print(1)", "metadata": {"run": "x\\u0000"}}', "metadata"),
        ('{"code": "print(1)", "metadata": {"deep": [["\\u0000"]]}}', "metadata"),
        ('{"code": "print(1)", "metadata": {"score": 1e400}}', "metadata"),
        ('{"code": "print(1)", "timeout_s": 1e400}', "timeout_s"),
        ('{"code": "print(1)", "memory_mb": -1e400}', "memory_mb"),
        ('{"code": "print(1)", "cpus": 1e400}', "cpus"),
    ],
)
def test_text_and_numbers_nothing_can_store_are_400_naming_the_field(alice_api, body, field):
    response = post_raw(alice_api, body)
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Evaluation.objects.exists()


def test_nul_in_the_idempotency_key_is_400_naming_the_header(alice_api):
    response = alice_api.post(URL, {"code": "print(1)"}, format="json", HTTP_IDEMPOTENCY_KEY="k\x00")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not Evaluation.objects.exists()


def test_a_lone_surrogate_in_a_field_name_is_400_and_the_reply_is_valid_json(alice_api):
    response = post_raw(alice_api, '{"code": "print(1)", "\\ud800": 1}')
    assert response.status_code == 400
    assert "lone surrogate" in messages_of(response)
    response.content.decode("utf-8")  # the name is shown escaped, never as a raw surrogate
    assert not Evaluation.objects.exists()


def test_json_nested_5000_deep_is_400_with_a_message(alice_api):
    body = '{"code": "print(1)", "metadata": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    response = post_raw(alice_api, body)
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in response.json()["error"]


def test_json_nested_deeper_than_the_limit_but_decodable_is_400_too(alice_api):
    body = '{"code": "print(1)", "metadata": {"a": ' + "[" * 100 + "]" * 100 + "}}"
    response = post_raw(alice_api, body)
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in messages_of(response)


def test_metadata_within_the_limits_is_kept_as_sent(alice_api):
    metadata = {"model": "gpt-x ☃", "scores": [1.5, 2, None, True], "nested": {"a": [[["ok"]]]}, "big": 10**30}
    response = alice_api.post(URL, {"code": "print(1)", "metadata": metadata}, format="json")
    assert response.status_code == 201, response.content
    assert Evaluation.objects.get().metadata == metadata


def test_a_number_with_thousands_of_digits_is_400_without_python_advice(alice_api):
    response = post_raw(alice_api, '{"code": "print(1)", "memory_mb": 1' + "0" * 5000 + "}")
    assert response.status_code == 400
    assert "digits" in response.json()["error"]
    assert "sys." not in response.json()["error"]


def test_a_body_that_is_not_utf8_is_400(alice_api):
    response = post_raw(alice_api, b'{"code": "\xff"}')
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


@pytest.mark.parametrize("after", ["²", "①", "٣", "-1", "1.5", "1e3", "9" * 13, ""])
def test_logs_after_anything_but_ascii_digits_is_400_naming_after(alice, alice_api, after):
    evaluation = make_evaluation(alice)
    add_chunk(evaluation, 1, b"hello\n")
    response = alice_api.get(f"{URL}{evaluation.pk}/logs/", {"after": after})
    assert response.status_code == 400
    assert "after" in response.json()


def test_logs_after_ascii_digits_still_works(alice, alice_api):
    evaluation = make_evaluation(alice)
    add_chunk(evaluation, 1, b"one\n")
    add_chunk(evaluation, 2, b"two\n")
    body = alice_api.get(f"{URL}{evaluation.pk}/logs/?after=1").json()
    assert [chunk["seq"] for chunk in body["chunks"]] == [2]


@pytest.mark.parametrize("query", ["q=a%00b", "q=%00", "status=%00", "%00=1", "page=%00"])
def test_nul_in_the_list_query_is_400_with_a_message(alice_api, query):
    response = alice_api.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]


def test_nul_in_an_artifact_name_is_400_and_never_serves_the_file(alice, alice_api):
    evaluation = make_evaluation(alice)
    add_artifact(evaluation, "secret.txt", b"secret")
    response = alice_api.get(f"{URL}{evaluation.pk}/artifacts/secret.txt%00.png")
    assert response.status_code == 400
    assert "NUL" in response.json()["error"]
    assert b"secret" not in response.content


def test_an_overlong_artifact_name_is_a_plain_404(alice, alice_api):
    evaluation = make_evaluation(alice)
    response = alice_api.get(f"{URL}{evaluation.pk}/artifacts/" + "a/" * 200 + "b")
    assert response.status_code == 404


@pytest.mark.parametrize("query", ["page=%C2%B2", "page=%E2%91%A0", "page=1e400", "page=99999999999999999999"])
def test_odd_page_numbers_are_a_4xx(alice_api, query):
    response = alice_api.get(f"{URL}?{query}")
    assert response.status_code == 404
    assert response.json()["error"] == "Invalid page."


def test_lone_surrogates_in_other_json_endpoints_are_400(olivia_api):
    response = post_raw(olivia_api, '{"engaged": "\\ud800"}', url="/api/v1/killswitch/")
    assert response.status_code == 400
    response = post_raw(olivia_api, '{"engaged": ' + "[" * 5000 + "]" * 5000 + "}", url="/api/v1/killswitch/")
    assert response.status_code == 400


# --- the same on the pages ------------------------------------------------------------------


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/?q=a%00b",
        "/?status=%00",
        "/evaluations/new/?from=%00",
        "/monitoring/audit/?actor=%00",
        "/admin/evaluations/evaluation/?q=%00",
        "/admin/evaluations/evaluation/?status__exact=%00",
        "/admin/audit/auditevent/?q=x%00",
    ],
)
def test_nul_in_a_page_query_is_400_with_a_message(olivia, path):
    response = signed_in(olivia).get(path)
    assert response.status_code == 400
    assert "must not contain NUL characters" in response.content.decode()


@pytest.mark.parametrize("page", ["%C2%B2", "%E2%91%A0"])
def test_unicode_digits_as_the_audit_page_are_400_not_500(olivia, page):
    assert signed_in(olivia).get(f"/monitoring/audit/?page={page}").status_code == 400


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("code", "print(1)\x00", "Null characters are not allowed."),
        ("stdin", "a\x00", "Null characters are not allowed."),
        ("timeout_s", "1e400", "Enter a number."),
        ("memory_mb", "1e400", "Enter a whole number."),
        ("cpus", "-1e400", "Enter a number."),
    ],
)
def test_the_form_refuses_the_same_input_with_a_field_error(alice, field, value, message):
    body = {"code": "print(1)", "language": "python", "priority": "normal", field: value}
    response = signed_in(alice).post(reverse("evaluations:new"), body)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Evaluation.objects.exists()
