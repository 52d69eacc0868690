"""The evaluation pages: list, new, detail, and the cancel/stop/run-again buttons."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Quota
from apps.evaluations import services
from apps.evaluations.models import Evaluation, OutputChunk, Status
from apps.evaluations.tests.factories import make_evaluation

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_no_inline_script_or_style(html: str):
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> (the CSP forbids it)"
    assert not re.findall(r"<style\b", html) and not re.findall(r"\sstyle=", html), "inline style"
    assert not re.findall(r"\son[a-z]+=", html), "inline event handler"


def detail_url(evaluation) -> str:
    return reverse("evaluations:detail", args=[evaluation.pk])


# --- who may see what -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["evaluations:list", "evaluations:new"])
def test_anonymous_visitors_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_anonymous_visitors_are_sent_to_sign_in_from_a_detail_page(client, alice):
    evaluation = make_evaluation(alice)
    response = client.get(detail_url(evaluation))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))


def test_the_list_shows_only_my_own_evaluations(alice, bob):
    mine = make_evaluation(alice)
    theirs = make_evaluation(bob)
    html = signed_in(alice).get(reverse("evaluations:list")).content.decode()
    assert str(mine.pk)[:8] in html
    assert str(theirs.pk)[:8] not in html


def test_an_operator_sees_everyones_evaluations_with_their_owner(alice, bob, olivia):
    make_evaluation(alice)
    make_evaluation(bob)
    html = signed_in(olivia).get(reverse("evaluations:list")).content.decode()
    assert "Owner" in html and ">alice<" in html and ">bob<" in html


def test_another_researchers_evaluation_is_a_404(alice, bob):
    evaluation = make_evaluation(alice)
    client = signed_in(bob)
    assert client.get(detail_url(evaluation)).status_code == 404
    assert client.get(reverse("evaluations:summary", args=[evaluation.pk])).status_code == 404
    assert client.get(reverse("evaluations:row", args=[evaluation.pk])).status_code == 404
    assert client.get(reverse("evaluations:detail", args=[uuid.uuid4()])).status_code == 404


def test_an_operator_may_open_anyones_evaluation(alice, olivia):
    evaluation = make_evaluation(alice)
    response = signed_in(olivia).get(detail_url(evaluation))
    assert response.status_code == 200
    assert "owner alice" in response.content.decode()


# --- list ------------------------------------------------------------------------------------


def test_the_list_filters_by_status(alice):
    running = make_evaluation(alice, status=Status.RUNNING)
    failed = make_evaluation(alice, status=Status.FAILED, exit_code=1)
    html = signed_in(alice).get(reverse("evaluations:list"), {"status": "failed"}).content.decode()
    assert str(failed.pk)[:8] in html and str(running.pk)[:8] not in html


def test_the_list_searches_code_and_id(alice):
    needle = make_evaluation(alice, code="print('needle in a haystack')")
    other = make_evaluation(alice, code="print('nothing')")
    client = signed_in(alice)
    html = client.get(reverse("evaluations:list"), {"q": "needle"}).content.decode()
    assert str(needle.pk)[:8] in html and str(other.pk)[:8] not in html
    html = client.get(reverse("evaluations:list"), {"q": str(other.pk)[:8]}).content.decode()
    assert str(other.pk)[:8] in html and str(needle.pk)[:8] not in html


def test_the_list_is_paginated_and_keeps_the_filters(alice):
    for _ in range(30):
        make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    client = signed_in(alice)
    html = client.get(reverse("evaluations:list"), {"status": "succeeded"}).content.decode()
    assert "Page 1 of 2" in html
    assert "status=succeeded&amp;page=2" in html
    html = client.get(reverse("evaluations:list"), {"status": "succeeded", "page": 2}).content.decode()
    assert html.count('id="row-') == 5


def test_running_rows_refresh_themselves_and_finished_rows_do_not(alice):
    running = make_evaluation(alice, status=Status.RUNNING)
    done = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    html = signed_in(alice).get(reverse("evaluations:list")).content.decode()
    assert f'hx-get="{reverse("evaluations:row", args=[running.pk])}"' in html
    assert f'hx-get="{reverse("evaluations:row", args=[done.pk])}"' not in html
    row = signed_in(alice).get(reverse("evaluations:row", args=[running.pk])).content.decode()
    assert row.strip().startswith(f'<tr id="row-{running.pk}"') and "status--running" in row


def test_the_list_costs_a_fixed_number_of_queries(alice, django_assert_max_num_queries):
    for _ in range(25):
        make_evaluation(alice)
    client = signed_in(alice)
    with django_assert_max_num_queries(8):
        assert client.get(reverse("evaluations:list")).status_code == 200


def test_the_pages_have_no_inline_script_or_style(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    client = signed_in(alice)
    for url in (reverse("evaluations:list"), reverse("evaluations:new"), detail_url(evaluation)):
        assert_no_inline_script_or_style(client.get(url).content.decode())


# --- detail ----------------------------------------------------------------------------------


def test_the_detail_page_shows_limits_exit_code_peaks_and_artifacts(alice):
    evaluation = make_evaluation(
        alice,
        status=Status.FAILED,
        exit_code=3,
        duration_ms=1234,
        peak_memory_bytes=50 * 1024 * 1024,
        cpu_time_ms=321,
        memory_mb_requested=128,
        memory_mb=128,
    )
    evaluation.artifacts.create(name="result.json", size=2, sha256="a" * 64, data=b"{}")
    html = signed_in(alice).get(detail_url(evaluation)).content.decode()
    assert "status--failed" in html
    assert ">3<" in html and "1234 ms" in html and "321 ms" in html and "50.0" in html
    assert "128 MiB" in html
    assert f'href="/api/v1/evaluations/{evaluation.pk}/artifacts/result.json"' in html
    assert f'data-ws-path="/ws/evaluations/{evaluation.pk}/"' in html


def test_sandbox_output_and_code_are_never_html(alice):
    evaluation = make_evaluation(alice, code=f"print('{XSS}')", error=XSS, status=Status.ERROR)
    OutputChunk.objects.create(evaluation=evaluation, seq=1, stream="stdout", data=f"{XSS}\n".encode())
    html = signed_in(alice).get(detail_url(evaluation)).content.decode()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the code and the error, escaped


def test_active_evaluations_offer_cancel_and_stop_finished_ones_do_not(alice):
    active = make_evaluation(alice, status=Status.RUNNING)
    done = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0)
    client = signed_in(alice)
    html = client.get(detail_url(active)).content.decode()
    assert reverse("evaluations:cancel", args=[active.pk]) in html
    assert reverse("evaluations:stop", args=[active.pk]) in html
    html = client.get(detail_url(done)).content.decode()
    assert reverse("evaluations:cancel", args=[done.pk]) not in html
    assert reverse("evaluations:rerun", args=[done.pk]) in html


# --- new evaluation --------------------------------------------------------------------------


def test_the_form_shows_the_allowed_ranges_and_the_languages(alice):
    maxima = services.maxima_for(alice)
    html = signed_in(alice).get(reverse("evaluations:new")).content.decode()
    assert f"Allowed 0.1–{maxima.timeout_s:g} s" in html
    assert f"Allowed 16–{maxima.memory_mb} MiB" in html
    assert '<option value="python"' in html and '<option value="bash"' in html


def test_examples_prefill_the_form(alice):
    html = signed_in(alice).get(reverse("evaluations:new"), {"example": "memory"}).content.decode()
    assert "bytearray(10 * 1024 * 1024)" in html


def test_submitting_the_form_creates_an_evaluation_and_opens_it(alice):
    Quota.objects.create(user=alice, high_priority=True)
    client = signed_in(alice)
    body = {"code": "print(1)\n", "language": "python", "priority": "high", "timeout_s": "5", "idempotency_key": "k1"}
    response = client.post(reverse("evaluations:new"), body)
    evaluation = Evaluation.objects.get(owner=alice)
    assert response.status_code == 302 and response["Location"] == detail_url(evaluation)
    assert (evaluation.code, evaluation.priority, evaluation.timeout_s) == ("print(1)\n", "high", 5.0)
    assert evaluation.memory_mb_requested is None  # empty means "the default"
    # A double click sends the same form (same key) again: still one evaluation.
    assert client.post(reverse("evaluations:new"), body)["Location"] == detail_url(evaluation)
    assert Evaluation.objects.filter(owner=alice).count() == 1


def test_limits_above_the_maximum_are_refused_with_a_field_error(alice):
    maxima = services.maxima_for(alice)
    response = signed_in(alice).post(
        reverse("evaluations:new"),
        {"code": "print(1)", "language": "python", "priority": "normal", "memory_mb": str(maxima.memory_mb + 1)},
    )
    assert response.status_code == 400
    assert f"Must be between 16 and {maxima.memory_mb}." in response.content.decode()
    assert not Evaluation.objects.exists()


def test_editing_a_copy_prefills_the_code_and_the_limits_asked(alice, bob):
    evaluation = make_evaluation(alice, code="print('copy me')", timeout_s_requested=7, timeout_s=7)
    html = signed_in(alice).get(reverse("evaluations:new"), {"from": evaluation.pk}).content.decode()
    assert "print(&#x27;copy me&#x27;)" in html and 'value="7.0"' in html
    html = signed_in(bob).get(reverse("evaluations:new"), {"from": evaluation.pk}).content.decode()
    assert "copy me" not in html


# --- buttons ---------------------------------------------------------------------------------


def test_cancel_ends_a_queued_evaluation(alice):
    evaluation = make_evaluation(alice)
    response = signed_in(alice).post(reverse("evaluations:cancel", args=[evaluation.pk]))
    assert response.status_code == 302 and response["Location"] == detail_url(evaluation)
    evaluation.refresh_from_db()
    assert evaluation.status == Status.CANCELLED


def test_cancel_asks_the_worker_to_stop_a_running_evaluation(alice):
    evaluation = make_evaluation(alice, status=Status.RUNNING)
    signed_in(alice).post(reverse("evaluations:cancel", args=[evaluation.pk]))
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.control) == (Status.RUNNING, "cancel")


def test_emergency_stop(alice):
    evaluation = make_evaluation(alice)
    signed_in(alice).post(reverse("evaluations:stop", args=[evaluation.pk]))
    evaluation.refresh_from_db()
    assert evaluation.status == Status.STOPPED


def test_nobody_else_can_cancel_or_stop_and_get_is_not_enough(alice, bob):
    evaluation = make_evaluation(alice)
    bobs = signed_in(bob)
    assert bobs.post(reverse("evaluations:cancel", args=[evaluation.pk])).status_code == 404
    assert bobs.post(reverse("evaluations:stop", args=[evaluation.pk])).status_code == 404
    assert signed_in(alice).get(reverse("evaluations:cancel", args=[evaluation.pk])).status_code == 405
    evaluation.refresh_from_db()
    assert evaluation.status == Status.QUEUED


def test_cancel_needs_the_csrf_token(alice):
    evaluation = make_evaluation(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("evaluations:cancel", args=[evaluation.pk])).status_code == 403


def test_run_again_submits_the_same_code_and_limits(alice):
    original = make_evaluation(alice, code="print('again')", status=Status.SUCCEEDED, exit_code=0, memory_mb=128)
    response = signed_in(alice).post(reverse("evaluations:rerun", args=[original.pk]))
    again = Evaluation.objects.exclude(pk=original.pk).get()
    assert response["Location"] == detail_url(again)
    assert (again.code, again.memory_mb, again.timeout_s, again.cpus) == (
        "print('again')",
        128,
        original.timeout_s,
        original.cpus,
    )
    assert again.metadata["rerun_of"] == str(original.pk)


def test_run_again_keeps_the_files_arguments_and_environment(alice):
    extras = {"files": {"helper.py": "X = 1\n"}, "args": ["a", "b c"], "env": {"MODE": "slow"}}
    original = make_evaluation(alice, code="import helper", status=Status.SUCCEEDED, exit_code=0, **extras)
    signed_in(alice).post(reverse("evaluations:rerun", args=[original.pk]))
    again = Evaluation.objects.exclude(pk=original.pk).get()
    assert (again.files, again.args, again.env) == (extras["files"], extras["args"], extras["env"])
