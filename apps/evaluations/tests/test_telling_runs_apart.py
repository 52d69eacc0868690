"""Names, labels, short ids, list filters, "run again" both ways and the comparison page (issue 16, item 3)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.evaluations.models import Evaluation, Status
from apps.evaluations.tests.factories import add_chunk, make_evaluation
from apps.evaluations.tests.helpers import URL, submit

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


# --- names and labels -----------------------------------------------------------------------


def test_alice_names_and_labels_a_run_and_reads_them_back(alice_api):
    body = submit(alice_api, code="print(1)", name="  baseline  ", labels=["model=gpt-4", "exp-3", "exp-3"]).json()
    assert body["name"] == "baseline"
    assert body["labels"] == ["model=gpt-4", "exp-3"]
    assert alice_api.get(f"{URL}{body['id']}/").json()["labels"] == ["model=gpt-4", "exp-3"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "x" * 101, "at most 100 characters"),
        ("name", "two\nlines", "one line"),
        ("name", 7, "Must be a string"),
        ("labels", ["has space"], "Not a valid label"),
        ("labels", ["-leading-dash"], "Not a valid label"),
        ("labels", ["x" * 65], "Not a valid label"),
        ("labels", [f"l{n}" for n in range(11)], "At most 10 labels"),
        ("labels", {"a": 1}, "Must be a list of strings"),
        ("labels", [1, 2], "Must be a list of strings"),
    ],
)
def test_a_bad_name_or_label_is_a_400_naming_the_field(alice_api, field, value, message):
    response = submit(alice_api, code="print(1)", **{field: value})
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert not Evaluation.objects.exists()


def test_the_list_filters_by_label_name_language_and_search_finds_names(alice, alice_api):
    tagged = make_evaluation(alice, name="Fixed off-by-one", labels=["exp-3", "model=gpt-4"])
    bash = make_evaluation(alice, language="bash", labels=["exp-4"])
    make_evaluation(alice, name="unrelated")
    assert ids(alice_api.get(URL, {"label": "exp-3"})) == [str(tagged.pk)]
    assert ids(alice_api.get(URL, {"label": "exp"})) == []  # a label matches whole, not in part
    assert ids(alice_api.get(URL, {"name": "off-by"})) == [str(tagged.pk)]
    assert ids(alice_api.get(URL, {"language": "bash"})) == [str(bash.pk)]
    assert ids(alice_api.get(URL, {"q": "off-by-one"})) == [str(tagged.pk)]


def test_the_list_filters_by_date_range_with_whole_days(alice, alice_api):
    may_3 = make_evaluation(alice, created_at=dt.datetime(2026, 5, 3, 23, 59, tzinfo=dt.UTC))
    may_4 = make_evaluation(alice, created_at=dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC))
    may_5 = make_evaluation(alice, created_at=dt.datetime(2026, 5, 5, 0, 0, tzinfo=dt.UTC))
    assert ids(alice_api.get(URL, {"created_after": "2026-05-04", "created_before": "2026-05-04"})) == [str(may_4.pk)]
    assert ids(alice_api.get(URL, {"created_after": "2026-05-04"})) == [str(may_5.pk), str(may_4.pk)]
    assert ids(alice_api.get(URL, {"created_before": "2026-05-04T00:00:00Z"})) == [str(may_3.pk)]
    response = alice_api.get(URL, {"created_after": "yesterday"})
    assert response.status_code == 400 and "created_after" in response.json()


def test_the_owner_filter_narrows_an_operators_list_and_never_widens_a_researchers(alice, bob, olivia_api, bob_api):
    alices = make_evaluation(alice)
    bobs = make_evaluation(bob)
    assert ids(olivia_api.get(URL, {"owner": "alice"})) == [str(alices.pk)]
    assert ids(bob_api.get(URL, {"owner": "alice"})) == []
    assert ids(bob_api.get(URL)) == [str(bobs.pk)]


def test_the_list_page_shows_names_and_labels_and_filters_by_them(alice):
    tagged = make_evaluation(alice, name="Fixed off-by-one", labels=["exp-3"])
    other = make_evaluation(alice, name="Another run")
    html = signed_in(alice).get(reverse("evaluations:list"), {"label": "exp-3"}).content.decode()
    assert "Fixed off-by-one" in html and 'href="/?label=exp-3"' in html
    assert str(tagged.pk) in html and str(other.pk) not in html
    page = signed_in(alice).get(reverse("evaluations:list"), {"created_after": "not a date"})
    assert page.status_code == 200 and "filter ignored" in page.content.decode()


def test_the_owner_filter_is_offered_to_operators_only(alice, olivia):
    assert 'name="owner"' not in signed_in(alice).get(reverse("evaluations:list")).content.decode()
    assert 'name="owner"' in signed_in(olivia).get(reverse("evaluations:list")).content.decode()


def test_the_form_sends_a_name_and_comma_separated_labels(alice):
    response = signed_in(alice).post(
        reverse("evaluations:new"),
        {"code": "print(1)", "language": "python", "priority": "normal", "name": "try 2", "labels": "a, b=c"},
    )
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302
    assert (evaluation.name, evaluation.labels) == ("try 2", ["a", "b=c"])


# --- short ids ------------------------------------------------------------------------------


def test_the_short_id_the_pages_show_works_on_every_api_route(alice, alice_api):
    evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    short = str(evaluation.pk)[:8]
    assert alice_api.get(f"{URL}{short}/").json()["id"] == str(evaluation.pk)
    assert alice_api.get(f"{URL}{short.upper()}/").json()["id"] == str(evaluation.pk)
    assert alice_api.get(f"{URL}{short}/logs/").status_code == 200
    assert alice_api.get(f"{URL}{short}/artifacts/").status_code == 200
    assert alice_api.get(f"{URL}{short}/results/").status_code == 200


def test_a_short_id_of_another_users_run_is_a_404_and_too_short_is_not_an_id(alice, bob_api):
    evaluation = make_evaluation(alice)
    assert bob_api.get(f"{URL}{str(evaluation.pk)[:8]}/").status_code == 404
    assert bob_api.get(f"{URL}{str(evaluation.pk)[:6]}/").status_code == 404


def test_an_ambiguous_short_id_is_a_400_that_says_to_give_more(alice, alice_api):
    make_evaluation(alice, id=uuid.UUID("abcdef01-0000-4000-8000-000000000001"))
    make_evaluation(alice, id=uuid.UUID("abcdef01-0000-4000-8000-000000000002"))
    response = alice_api.get(f"{URL}abcdef01/")
    assert response.status_code == 400
    assert "give more characters" in response.json()["detail"]
    assert alice_api.get(f"{URL}abcdef01-0000-4000-8000-00000000000/").status_code == 400
    page = signed_in(alice).get("/evaluations/abcdef01/")
    assert page.status_code == 400 and "give more characters" in page.content.decode()


def test_the_detail_page_at_a_short_id_redirects_to_the_full_address(alice):
    evaluation = make_evaluation(alice)
    response = signed_in(alice).get(f"/evaluations/{str(evaluation.pk)[:8]}/")
    assert response.status_code == 302 and response["Location"] == f"/evaluations/{evaluation.pk}/"


# --- run again, both ways, and comparing ------------------------------------------------------


def test_run_again_links_both_ways_and_keeps_the_name_and_labels(alice):
    original = make_evaluation(alice, status=Status.FAILED, exit_code=1, name="first try", labels=["exp-3"])
    signed_in(alice).post(reverse("evaluations:rerun", args=[original.pk]))
    again = Evaluation.objects.exclude(pk=original.pk).get()
    assert (again.name, again.labels, again.rerun_of_id) == ("first try", ["exp-3"], str(original.pk))
    again_html = signed_in(alice).get(reverse("evaluations:detail", args=[again.pk])).content.decode()
    assert 'id="rerun-of-link"' in again_html and f'href="/evaluations/{original.pk}/"' in again_html
    original_html = signed_in(alice).get(reverse("evaluations:detail", args=[original.pk])).content.decode()
    assert 'class="rerun-link"' in original_html and f'href="/evaluations/{again.pk}/"' in original_html
    assert f"?a={original.pk}&amp;b={again.pk}" in original_html


def test_a_rerun_by_someone_else_is_not_listed_for_alice(alice, olivia):
    original = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    signed_in(olivia).post(reverse("evaluations:rerun", args=[original.pk]))
    assert Evaluation.objects.count() == 2
    html = signed_in(alice).get(reverse("evaluations:detail", args=[original.pk])).content.decode()
    assert 'class="rerun-link"' not in html


def test_the_comparison_page_diffs_code_limits_verdict_and_output(alice):
    left = make_evaluation(alice, code="print(1)\nprint(2)\n", status=Status.FAILED, exit_code=1, memory_mb=128)
    right = make_evaluation(alice, code="print(1)\nprint(3)\n", status=Status.SUCCEEDED, exit_code=0, memory_mb=256)
    add_chunk(left, 1, b"1\n2\n<b>x</b>\n")
    add_chunk(right, 1, b"1\n3\n<b>x</b>\n")
    response = signed_in(alice).get(reverse("evaluations:compare"), {"a": str(left.pk)[:8], "b": str(right.pk)})
    html = response.content.decode()
    assert response.status_code == 200
    assert "-print(2)" in html and "+print(3)" in html
    assert "128 MiB" in html and "256 MiB" in html and "Failed" in html and "Succeeded" in html
    assert "-2" in html.split('id="output-diff"')[1] and "+3" in html.split('id="output-diff"')[1]
    assert "<b>x</b>" not in html  # program output is text, never HTML


def test_comparing_with_someone_elses_run_is_a_404(alice, bob):
    mine, theirs = make_evaluation(alice), make_evaluation(bob)
    response = signed_in(alice).get(reverse("evaluations:compare"), {"a": str(mine.pk), "b": str(theirs.pk)})
    assert response.status_code == 404
    assert signed_in(alice).get(reverse("evaluations:compare"), {"a": str(mine.pk)}).status_code == 404


def test_statuses_read_the_same_everywhere():
    assert Status.OOM_KILLED.label == "OOM killed" and Status.TIMED_OUT.label == "Timed out"


def test_the_list_shows_a_readable_duration_with_the_exact_ms_in_a_title(alice):
    make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0, duration_ms=123_456, finished_at=timezone.now())
    html = signed_in(alice).get(reverse("evaluations:list")).content.decode()
    assert '<span title="123456 ms">2 min 3 s</span>' in html


# --- the code editor ------------------------------------------------------------------------


def test_the_form_loads_the_editor_bundle_only_when_it_was_built(alice, monkeypatch):
    from apps.evaluations import views

    monkeypatch.setattr(views, "code_editor_bundle", lambda: "build/code-editor.js")
    html = signed_in(alice).get(reverse("evaluations:new")).content.decode()
    assert '<script src="/static/build/code-editor.js" defer></script>' in html
    monkeypatch.setattr(views, "code_editor_bundle", lambda: None)
    html = signed_in(alice).get(reverse("evaluations:new")).content.decode()
    assert "code-editor.js" not in html and "data-code-editor" in html  # the plain textarea stays the editor


def test_the_forms_line_breaks_reach_the_program_as_typed(alice):
    signed_in(alice).post(
        reverse("evaluations:new"),
        {"code": "echo a\r\necho b\r\n", "stdin": "x\r\ny", "language": "bash", "priority": "normal"},
    )
    assert Evaluation.objects.values_list("code", "stdin").get() == ("echo a\necho b\n", "x\ny")
