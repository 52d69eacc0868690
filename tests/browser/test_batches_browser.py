"""In a real browser, against the real stack: a batch's page follows its progress live, and Cancel works."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from apps.accounts.tests.conftest import forget_sign_in_throttles
from apps.evaluations.models import Evaluation, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from apps.evaluations.tests.factories import make_evaluation
from apps.tasks import progress
from apps.tasks.models import Batch, BatchStatus
from apps.tasks.tests.page_fixtures import end_sample, make_task
from tests.browser import chromium
from tests.browser.orm import orm

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

PASSWORD = "alice-password-1"  # the root conftest's alice


@pytest.fixture(autouse=True)
def runtimes(transactional_db):
    ensure_default_runtimes(Runtime)


@pytest.fixture
def alice_page(alice, live_stack):
    """A headless Chromium signed in as alice through the sign-in form; ``page.problems``: console errors."""
    from playwright.sync_api import sync_playwright

    forget_sign_in_throttles()
    with sync_playwright() as p:
        browser = chromium.launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.problems = []
        page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        page.goto(f"{live_stack.url}/accounts/login/")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("form.stack-form button[type=submit]")
        page.wait_for_load_state()
        page.base = live_stack.url
        yield page
        context.close()
        browser.close()


def waiting_batch(owner, samples: int) -> tuple[Batch, list[Evaluation]]:
    """A batch whose samples wait, held (built directly, so the live worker never takes them)."""
    task = make_task(owner)
    batch = Batch.objects.create(owner=owner, task=task, k=[1], total=samples)
    rows = [
        make_evaluation(owner, batch_id=batch.pk, task=task.slug, task_version=1, tests=task.tests, held=True)
        for _ in range(samples)
    ]
    return batch, rows


def sample_ends(batch: Batch, sample: Evaluation, *, passed: bool) -> None:
    """What the worker does when a sample ends: store its verdicts, end the batch if it was the last, publish."""
    end_sample(sample, passed=passed)
    batch.refresh_from_db()
    progress.finish_if_done(batch)
    progress.publish(batch)


def test_the_batch_page_follows_the_progress_live_until_the_end(alice_page, alice):
    page = alice_page
    batch, (first, second) = orm(waiting_batch, alice, 2)
    page.goto(f"{page.base}/batches/{batch.pk}/")
    expect(page.locator("#batch-live-note")).to_have_text("Live")
    expect(page.locator("#batch-ended")).to_have_text("0")

    orm(sample_ends, batch, first, passed=True)
    expect(page.locator("#batch-ended")).to_have_text("1")
    expect(page.locator("#batch-passed")).to_have_text("1")
    expect(page.locator("#batch-progress")).to_have_js_property("value", 1)
    expect(page.locator("#batch-status")).to_have_text("running")

    orm(sample_ends, batch, second, passed=False)
    expect(page.locator("#batch-status")).to_have_text("completed")
    expect(page.locator("#batch-progress")).to_have_js_property("value", 2)
    expect(page.locator('[data-pass-at-k="1"]')).to_have_text("0.5000")
    expect(page.locator('[data-count="failed"]')).to_have_text("1")
    expect(page.locator("#batch-live-note")).to_contain_text("Finished")
    assert page.problems == []


def test_cancel_on_the_batch_page_cancels_the_waiting_samples(alice_page, alice):
    page = alice_page
    batch, _ = orm(waiting_batch, alice, 2)
    page.goto(f"{page.base}/batches/{batch.pk}/")
    page.click("#batch-cancel-open")
    page.click("#batch-cancel-confirm")
    expect(page.get_by_text("Batch cancelled")).to_be_visible()
    expect(page.locator("#batch-status")).to_have_text("cancelled")
    expect(page.locator("#batch-cancel-open")).to_have_count(0)
    assert orm(lambda: Batch.objects.get(pk=batch.pk).status) == BatchStatus.CANCELLED
    statuses = orm(lambda: set(Evaluation.objects.filter(batch_id=batch.pk).values_list("status", flat=True)))
    assert statuses == {Status.CANCELLED}
    assert page.problems == []
