"""The task catalogue, a task's page, the batch list and a batch's page (with its Cancel button)."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from apps.evaluations.models import Evaluation, Reason, Status
from apps.tasks.models import Batch, BatchStatus, Task
from apps.tasks.tests.page_fixtures import (
    HIDDEN_CHECK,
    HIDDEN_DETAIL,
    HIDDEN_EXPECTED,
    HIDDEN_STDIN,
    end_sample,
    make_task,
    samples_of,
    submit,
)

pytestmark = pytest.mark.django_db

HIDDEN = (HIDDEN_CHECK, HIDDEN_EXPECTED, HIDDEN_STDIN, HIDDEN_DETAIL, "the-hidden-check-9")


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(user, name, *args, hostile_text=False, **query) -> str:
    """The page's HTML; it never has inline script, style or handlers (unless ``hostile_text`` shows them as text)."""
    response = signed_in(user).get(reverse(name, args=args), query)
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script> (the CSP forbids it)"
    if not hostile_text:
        assert not re.findall(r"\sstyle=", html) and not re.findall(r"\son[a-z]+=", html), "inline style or handler"
    return html


def assert_nothing_hidden(html: str):
    for secret in HIDDEN:
        assert secret not in html


# --- the catalogue --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tasks:list", "tasks:batches"])
def test_anonymous_visitors_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))


def test_the_catalogue_shows_public_tasks_and_my_own_but_not_another_researchers_private_ones(alice, bob, olivia):
    make_task(olivia, "humaneval/0", public=True, source="humaneval", title="Has close elements")
    make_task(alice, "alice/add")
    make_task(bob, "bob/secret-task")
    html = page(alice, "tasks:list")
    assert "humaneval/0" in html and "alice/add" in html
    assert "bob/secret-task" not in html


def test_the_catalogue_filters_by_source_and_searches(alice, olivia):
    make_task(olivia, "humaneval/0", public=True, source="humaneval", title="Has close elements")
    make_task(olivia, "mbpp/1", public=True, source="mbpp", title="Remove first and last")
    html = page(alice, "tasks:list", source="humaneval")
    assert "humaneval/0" in html and "mbpp/1" not in html
    assert '<option value="mbpp">' in html  # the other source can still be picked
    html = page(alice, "tasks:list", q="first and last")
    assert "mbpp/1" in html and "humaneval/0" not in html


def test_the_catalogue_is_paginated(alice):
    for n in range(27):
        make_task(alice, f"alice/t{n:02d}")
    first, second = page(alice, "tasks:list"), page(alice, "tasks:list", page=2)
    assert "alice/t00" in first and "alice/t26" not in first
    assert "alice/t26" in second and "Page 2 of 2" in second


def test_an_operator_sees_every_task(bob, olivia):
    make_task(bob, "bob/secret-task")
    assert "bob/secret-task" in page(olivia, "tasks:list")


# --- a task's page --------------------------------------------------------------------------------


def test_a_non_owner_sees_test_names_but_never_the_hidden_tests(alice, olivia):
    task = make_task(olivia, "humaneval/0", public=True, source="humaneval")
    html = page(alice, "tasks:detail", task.slug)
    assert "adds-small" in html and "check-add" in html and "performance" in html
    assert 'id="tests-hidden-note"' in html
    assert_nothing_hidden(html)


def test_the_owner_sees_the_tests_in_full(alice):
    task = make_task(alice)
    html = page(alice, "tasks:detail", task.slug)
    assert HIDDEN_EXPECTED in html and HIDDEN_STDIN in html and "the-hidden-check-9" in html
    assert 'id="tests-hidden-note"' not in html


def test_an_operator_sees_the_tests_in_full(bob, olivia):
    task = make_task(bob, "bob/t")
    assert HIDDEN_EXPECTED in page(olivia, "tasks:detail", task.slug)


def test_another_researchers_private_task_is_a_404(alice, bob):
    task = make_task(bob, "bob/t")
    client = signed_in(alice)
    assert client.get(reverse("tasks:detail", args=[task.slug])).status_code == 404
    assert client.get(reverse("tasks:detail", args=["no/such-task"])).status_code == 404


def test_the_prompt_is_shown_as_escaped_text_never_as_html(alice):
    task = make_task(alice, prompt="# Title\n<script>alert(1)</script><img src=x onerror=alert(2)>")
    html = page(alice, "tasks:detail", task.slug, hostile_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


def test_the_task_page_lists_its_versions_and_my_recent_batches(alice):
    task = make_task(alice)
    batch = submit(alice, task, ["print(4)"])
    from apps.tasks import services

    edited = services.edit_task(task, alice, {"title": "Add, edited"})
    assert edited.version == 2
    html = page(alice, "tasks:detail", task.slug)
    assert "Add, edited" in html and "?version=1" in html
    assert reverse("tasks:batch", args=[batch.pk]) in html
    old = page(alice, "tasks:detail", task.slug, version="1")
    assert "not the latest" in old and "Add two numbers" in old
    assert signed_in(alice).get(reverse("tasks:detail", args=[task.slug]), {"version": "x"}).status_code == 404


# --- batches --------------------------------------------------------------------------------------


def test_the_batch_list_shows_only_my_batches_and_operators_see_all(alice, bob, olivia):
    task = make_task(olivia, "humaneval/0", public=True)
    mine, theirs = submit(alice, task, ["print(4)"]), submit(bob, task, ["print(5)"])
    html = page(alice, "tasks:batches")
    assert str(mine.pk)[:8] in html and str(theirs.pk)[:8] not in html
    html = page(olivia, "tasks:batches")
    assert str(mine.pk)[:8] in html and str(theirs.pk)[:8] in html and ">bob<" in html


def test_another_researchers_batch_is_a_404(alice, bob):
    task = make_task(alice)
    batch = submit(alice, task, ["print(4)"])
    client = signed_in(bob)
    assert client.get(reverse("tasks:batch", args=[batch.pk])).status_code == 404
    assert client.post(reverse("tasks:batch-cancel", args=[batch.pk])).status_code == 404
    assert signed_in(alice).get(reverse("tasks:batch", args=[uuid.uuid4()])).status_code == 404
    assert Evaluation.objects.filter(batch_id=batch.pk, status=Status.QUEUED).count() == 1


def test_the_batch_page_shows_progress_pass_at_k_per_task_and_links_to_every_sample(alice, olivia):
    task = make_task(olivia, "humaneval/0", public=True)
    batch = submit(alice, task, ["print(4)", "print(5)", "print(6)"], k=(1, 2, 5))
    first, second, _third = samples_of(batch)
    end_sample(first, passed=True)
    end_sample(second, passed=False, message="line 1 differs")
    html = page(alice, "tasks:batch", batch.pk)
    assert '<progress id="batch-progress" max="3" value="2"' in html
    assert '<span id="batch-passed">1</span>' in html
    assert '<dd data-count="queued">1</dd>' in html and '<dd data-count="failed">1</dd>' in html
    assert '<td data-pass-at-k="1">0.5000</td>' in html  # 2 judged, 1 passed
    assert '<td data-pass-at-k="2">1.0000</td>' in html
    assert "not computable: fewer than 5 judged samples for humaneval/0" in html
    for sample in samples_of(batch):
        assert reverse("evaluations:detail", args=[sample.pk]) in html
    assert 'id="batch-cancel-open"' in html
    assert reverse("api-batch-results", args=[batch.pk]) + "?format=jsonl" in html
    assert 'data-ws-path="/ws/batches/' in html and "js/batch-detail.js" in html


def test_the_failure_breakdown_counts_by_test_verdict_and_reason_with_messages_but_no_detail(alice, olivia):
    task = make_task(olivia, "humaneval/0", public=True)
    batch = submit(alice, task, ["print(4)", "print(5)", "print(6)", "import time; time.sleep(99)"])
    *failing, cut_short = samples_of(batch)
    for sample in failing:
        end_sample(sample, passed=False, message="output differs at line 1")
    # No verdicts: it ran out of time before its tests ended.
    Evaluation.objects.filter(pk=cut_short.pk).update(status=Status.TIMED_OUT, reason=Reason.TIMEOUT, passed=None)
    html = page(alice, "tasks:batch", batch.pk)
    by_test = html.split('id="failures-by-test"')[1].split("</table>")[0]
    assert "adds-small" in by_test and "<td>3</td>" in by_test and "check-add" not in by_test
    assert "<td>failed</td><td>3</td>" in html.split('id="failures-by-status"')[1]
    by_reason = html.split('id="failures-by-reason"')[1].split("</table>")[0]
    assert "<td>tests_failed</td><td>3</td>" in by_reason and "<td>timeout</td><td>1</td>" in by_reason
    assert "output differs at line 1" in html
    assert_nothing_hidden(html)


def test_an_operator_may_open_anyones_batch_page(alice, olivia):
    batch = submit(alice, make_task(alice), ["print(4)"])
    html = page(olivia, "tasks:batch", batch.pk)
    assert "Owner" in html and "alice" in html
    assert_nothing_hidden(html)


def test_the_samples_are_paginated(alice):
    batch = submit(alice, make_task(alice), [f"print({n})" for n in range(60)])
    first, second = page(alice, "tasks:batch", batch.pk), page(alice, "tasks:batch", batch.pk, page=2)
    samples = samples_of(batch)
    assert reverse("evaluations:detail", args=[samples[0].pk]) in first
    assert reverse("evaluations:detail", args=[samples[59].pk]) not in first
    assert reverse("evaluations:detail", args=[samples[59].pk]) in second


def test_cancel_from_the_page_cancels_every_sample_that_has_not_ended(alice):
    batch = submit(alice, make_task(alice), ["print(4)", "print(5)"])
    end_sample(samples_of(batch)[0], passed=True)
    client = signed_in(alice)
    response = client.post(reverse("tasks:batch-cancel", args=[batch.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("tasks:batch", args=[batch.pk])
    assert "Batch cancelled" in response.content.decode()
    batch.refresh_from_db()
    assert batch.status == BatchStatus.CANCELLED
    assert sorted(s.status for s in samples_of(batch)) == [Status.CANCELLED, Status.SUCCEEDED]
    html = response.content.decode()
    assert 'id="batch-cancel-open"' not in html  # a final batch has no Cancel button


def test_cancel_needs_a_post_with_a_csrf_token(alice):
    batch = submit(alice, make_task(alice), ["print(4)"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(reverse("tasks:batch-cancel", args=[batch.pk])).status_code == 405
    assert client.post(reverse("tasks:batch-cancel", args=[batch.pk])).status_code == 403
    assert Batch.objects.get(pk=batch.pk).status == BatchStatus.QUEUED


def test_the_navigation_links_to_tasks_and_batches(alice):
    html = page(alice, "tasks:list")
    assert f'href="{reverse("tasks:list")}" aria-current="page"' in html
    assert f'href="{reverse("tasks:batches")}"' in html


# --- a sample's evaluation page -------------------------------------------------------------------


def test_a_samples_page_shows_each_tests_verdict_and_message_but_not_hidden_detail(alice, olivia):
    batch = submit(alice, make_task(olivia, "humaneval/0", public=True), ["print(4)"])
    sample = end_sample(samples_of(batch)[0], passed=False, message="output differs at line 1")
    assert sample.tests_hidden
    html = page(alice, "evaluations:detail", sample.pk)
    assert "adds-small" in html and "check-add" in html and "output differs at line 1" in html
    assert reverse("tasks:batch", args=[batch.pk]) in html
    assert_nothing_hidden(html)
    assert HIDDEN_DETAIL in page(olivia, "evaluations:detail", sample.pk)  # operators may see the tests


def test_the_owner_of_the_task_sees_the_detail_on_their_samples_page(alice):
    batch = submit(alice, make_task(alice), ["print(4)"])
    sample = end_sample(samples_of(batch)[0], passed=False)
    assert not sample.tests_hidden
    assert HIDDEN_DETAIL in page(alice, "evaluations:detail", sample.pk)


def test_an_evaluation_that_is_not_a_sample_has_no_tests_section(alice):
    from apps.evaluations.tests.factories import make_evaluation

    assert 'id="tests-heading"' not in page(alice, "evaluations:detail", make_evaluation(alice).pk)


# --- creating and editing a task ------------------------------------------------------------------

NEW_TASK = {
    "slug": "alice/four",
    "title": "Print four",
    "prompt": "Print 4.",
    "language": "python",
    "entry_point": "",
    "timeout_s": "5",
    "memory_mb": "128",
    "tests": '[{"name": "prints-4", "kind": "io", "expected_stdout": "4\\n"}]',
    "source": "mine",
}


def test_a_researcher_creates_a_private_task_from_the_page(alice):
    client = signed_in(alice)
    assert 'name="public"' not in client.get(reverse("tasks:new")).content.decode()  # operators only
    response = client.post(reverse("tasks:new"), {**NEW_TASK, "public": "on"})
    assert response.status_code == 302 and response["Location"] == reverse("tasks:detail", args=["alice/four"])
    task = Task.objects.get(slug="alice/four")
    assert (task.owner, task.public, task.source, task.tests[0]["match"]) == (alice, False, "mine", "exact")


def test_the_new_task_page_shows_the_services_errors_and_creates_nothing(alice):
    client = signed_in(alice)
    response = client.post(reverse("tasks:new"), {**NEW_TASK, "tests": '[{"name": "x", "kind": "io"}]'})
    assert response.status_code == 400
    assert "tests[0].expected_stdout: This field is required." in response.content.decode()
    response = client.post(reverse("tasks:new"), {**NEW_TASK, "tests": "[{"})
    assert response.status_code == 400 and "Not valid JSON" in response.content.decode()
    response = client.post(reverse("tasks:new"), {**NEW_TASK, "slug": "Not A Slug"})
    assert response.status_code == 400 and "Must be lowercase letters" in response.content.decode()
    assert not Task.objects.exists()


def test_an_operator_may_publish_a_task_from_the_page(olivia):
    response = signed_in(olivia).post(reverse("tasks:new"), {**NEW_TASK, "slug": "ops/four", "public": "on"})
    assert response.status_code == 302
    assert Task.objects.get(slug="ops/four").public


def test_editing_a_used_task_from_the_page_makes_a_new_version(alice):
    task = make_task(alice)
    submit(alice, task, ["print(4)"])
    client = signed_in(alice)
    form = client.get(reverse("tasks:edit", args=[task.slug])).content.decode()
    assert "Add two numbers" in form and HIDDEN_EXPECTED in form  # the owner edits the tests too
    response = client.post(
        reverse("tasks:edit", args=[task.slug]), {**NEW_TASK, "slug": "ignored/slug", "title": "Add, edited"}
    )
    assert response.status_code == 302
    latest = Task.objects.get(slug=task.slug, is_latest=True)
    assert (latest.version, latest.title, latest.tests[0]["name"]) == (2, "Add, edited", "prints-4")
    assert Task.objects.get(slug=task.slug, version=1).title == "Add two numbers"
    assert not Task.objects.filter(slug="ignored/slug").exists()


def test_only_the_owner_or_an_operator_may_edit_a_task(alice, bob, olivia):
    public = make_task(olivia, "humaneval/0", public=True)
    private = make_task(alice, "alice/add")
    client = signed_in(bob)
    assert client.get(reverse("tasks:edit", args=[public.slug])).status_code == 403
    assert client.post(reverse("tasks:edit", args=[public.slug]), NEW_TASK).status_code == 403
    assert client.get(reverse("tasks:edit", args=[private.slug])).status_code == 404
    assert 'id="task-edit"' not in page(bob, "tasks:detail", public.slug)
    assert 'id="task-edit"' in page(alice, "tasks:detail", private.slug)
    assert signed_in(olivia).get(reverse("tasks:edit", args=[private.slug])).status_code == 200
    assert Task.objects.get(slug=public.slug).version == 1


def test_the_download_link_gives_the_signed_in_owner_the_jsonl_without_hidden_detail(alice, bob, olivia):
    batch = submit(alice, make_task(olivia, "humaneval/0", public=True), ["print(4)"])
    end_sample(samples_of(batch)[0], passed=False)
    url = reverse("api-batch-results", args=[batch.pk]) + "?format=jsonl"
    assert url in page(alice, "tasks:batch", batch.pk)
    response = signed_in(alice).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    body = b"".join(response.streaming_content).decode()
    assert '"line 1 differs"' in body
    assert_nothing_hidden(body)
    assert signed_in(bob).get(url).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/tasks/?page=abc&source=" + "x" * 500 + "&q=%00",
        "/tasks/?page=-1",
        "/tasks/alice/add/?version=99999999999999",
        "/tasks/alice/add/?version=%D9%A3",  # an Arabic-Indic digit: isdigit() but not a version
        "/tasks/../etc/passwd/",
        "/batches/?page=999999",
        "/batches/not-a-uuid/",
        "/edit-task/no/such/",
    ],
)
def test_bad_input_in_the_address_is_a_clear_page_never_a_500(alice, path):
    make_task(alice)
    assert signed_in(alice).get(path).status_code in (200, 400, 404)


def test_the_samples_can_be_narrowed_to_those_that_did_not_pass(alice):
    batch = submit(alice, make_task(alice), ["print(4)", "print(5)", "print(6)"])
    passing, failing, waiting = samples_of(batch)
    end_sample(passing, passed=True)
    end_sample(failing, passed=False)
    link = {s: reverse("evaluations:detail", args=[s.pk]) for s in (passing, failing, waiting)}
    shown = {
        which: {s for s, url in link.items() if url in page(alice, "tasks:batch", batch.pk, samples=which)}
        for which in ("failed", "passed", "waiting", "", "nonsense")
    }
    assert shown["failed"] == {failing} and shown["passed"] == {passing} and shown["waiting"] == {waiting}
    assert shown[""] == shown["nonsense"] == {passing, failing, waiting}
