"""In a real browser against the real stack: the operator dashboard (live running table, kill switch with
confirmation, alerts) and an evaluation page drawing its resource graph live and after the run."""

from __future__ import annotations

import re
import threading
import time

import django_rq
import pytest
from django.db import connections
from playwright.sync_api import expect
from rq.suspension import resume

from apps.accounts.tests.conftest import forget_sign_in_throttles
from apps.evaluations import publisher, services
from apps.evaluations.models import Evaluation, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from apps.evaluations.tests.factories import make_evaluation
from apps.monitoring.alerts import raise_alert
from apps.monitoring.models import SafetyRule
from apps.monitoring.rules import ensure_default_rules
from tests.browser import chromium
from tests.browser.orm import orm
from tests.browser.watch import SocketWatch, poll

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

CLIMBER = (
    "import time\n"
    "blocks = []\n"
    "for i in range(8):\n"
    "    blocks.append(b'x' * (4 << 20))\n"
    "    print('step', i, flush=True)\n"
    "    time.sleep(0.6)\n"
    "print('done', flush=True)\n"
)


@pytest.fixture(autouse=True)
def seeded(transactional_db):
    """Transactional tests flush the tables, data migrations included: put runtimes and rules back."""
    ensure_default_runtimes(Runtime)
    ensure_default_rules(SafetyRule)


@pytest.fixture(autouse=True)
def queues_resumed():
    yield
    resume(django_rq.get_connection("default"))  # never leave the live stack's worker paused


@pytest.fixture
def olivia_page(olivia, live_stack):
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
        page.fill("input[name=login]", "olivia")
        page.fill("input[name=password]", "olivia-password-1")
        page.click("form.stack-form button[type=submit]")
        page.wait_for_load_state()
        page.base = live_stack.url
        page.stack = live_stack
        yield page
        context.close()
        browser.close()


def sample_count(page) -> int:
    return int(page.locator("#resources").get_attribute("data-sample-count") or 0)


def wait_for_samples(page, at_least: int, timeout_s: float = 30) -> None:
    """Poll from Python: the page's strict CSP refuses Playwright's string-evaluated wait_for_function."""
    deadline = time.monotonic() + timeout_s
    while sample_count(page) < at_least:
        assert time.monotonic() < deadline, f"only {sample_count(page)} samples drawn"
        page.wait_for_timeout(200)


def test_the_operator_dashboard_shows_work_live_and_the_kill_switch_needs_confirmation(olivia_page, olivia):
    page = olivia_page
    page.goto(f"{page.base}/monitoring/")
    expect(page.get_by_role("heading", name="Monitoring", exact=True)).to_be_visible()
    expect(page.locator("#worker-table")).to_contain_text(page.stack.worker_name)
    expect(page.locator("#queue-table")).to_contain_text("default")
    expect(page.locator("#rate-chart")).to_be_visible()
    expect(page.locator("header .site-nav")).to_contain_text("Monitoring")

    evaluation, _ = orm(services.submit, olivia, {"code": "import time\nprint('up', flush=True)\ntime.sleep(30)"})
    # The running table refreshes by itself (htmx) and shows the evaluation with its resource use.
    expect(page.locator("#running-table")).to_contain_text(str(evaluation.pk)[:8], timeout=30_000)

    page.get_by_role("link", name="Kill switch…").click()
    expect(page.locator("#killswitch")).to_contain_text("1 running")
    page.get_by_role("button", name="Engage the kill switch").click()
    assert page.url.endswith("/monitoring/killswitch/")  # the browser refused: the box is not ticked
    page.check("#killswitch-confirm")
    page.get_by_role("button", name="Engage the kill switch").click()
    page.wait_for_url(re.compile(r"/monitoring/$"))
    expect(page.locator("#killswitch-state")).to_contain_text("ENGAGED")
    expect(page.locator(".messages")).to_contain_text("1 evaluation(s) stopped")
    assert status_of(evaluation) in (Status.RUNNING, Status.STOPPED)

    # The emergency stop raised an alert: the header badge counts it, the alerts page acknowledges it.
    page.reload()
    expect(page.locator("#alert-badge")).to_have_text(re.compile(r"^1"))
    page.locator("#alert-badge").click()
    expect(page.locator(".alert-table")).to_contain_text("emergency_stop")
    page.get_by_role("button", name="Acknowledge", exact=True).click()  # the row's own button, not the bulk ones
    expect(page.locator(".messages")).to_contain_text("acknowledged")
    expect(page.locator("#alert-badge")).to_have_count(0)

    page.goto(f"{page.base}/monitoring/killswitch/")
    page.check("input[name=confirm]")
    page.get_by_role("button", name="Release the kill switch").click()
    expect(page.locator("#killswitch-state")).to_contain_text("Queues running")

    page.goto(f"{page.base}/monitoring/audit/?action=killswitch")
    expect(page.locator("#audit-table")).to_contain_text("killswitch.engage")
    expect(page.locator("#audit-table")).to_contain_text("killswitch.release")
    assert not page.problems, page.problems


def status_of(evaluation) -> str:
    return orm(lambda: Evaluation.objects.values_list("status", flat=True).get(pk=evaluation.pk))


def publish_beside_playwright(evaluation_id, message: dict) -> None:
    """Playwright's sync API runs an event loop in this thread, where async_to_sync refuses to run."""

    def publish():
        try:
            publisher.publish_alert(evaluation_id, message)
        finally:
            connections.close_all()

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join(10)


def test_an_alert_raises_the_header_badge_live_and_shows_a_text_only_toast(olivia_page, olivia):
    page = olivia_page
    alert_sockets = SocketWatch.on(page, "/ws/alerts/")
    page.goto(f"{page.base}/")
    expect(page.locator("#alert-badge")).to_have_count(0)
    # This page's alerts socket is subscribed once it has sent its first message (the count).
    poll(page, alert_sockets.latest_received, what="the alerts socket's first message")
    evaluation = orm(make_evaluation, olivia)
    hostile = '<img src=x id="pwned">'
    alert = orm(
        raise_alert,
        evaluation_id=evaluation.pk,
        rule_name="fork-bomb",
        severity="critical",
        message=hostile,
        evidence=hostile,
    )
    publish_beside_playwright(evaluation.pk, alert.as_message())
    # No reload: the badge appears and the toast names the rule, linking to the evaluation.
    expect(page.locator("#alert-badge")).to_have_text(re.compile(r"^1"))
    toast = page.locator("#alert-toasts .alert-toast")
    expect(toast).to_contain_text("fork-bomb")
    expect(toast).to_contain_text(hostile)  # shown as text ...
    expect(page.locator("#pwned")).to_have_count(0)  # ... never parsed as markup
    expect(page.locator("#alert-toasts")).to_have_attribute("aria-live", "polite")
    expect(toast.get_by_role("link")).to_have_attribute("href", f"/evaluations/{evaluation.pk}/")
    assert not page.problems, page.problems


def test_an_evaluation_page_draws_its_resource_graph_live_and_after_the_run(olivia_page, olivia):
    page = olivia_page
    evaluation, _ = orm(services.submit, olivia, {"code": CLIMBER, "memory_mb": 128, "timeout_s": 30})
    page.goto(f"{page.base}/evaluations/{evaluation.pk}/")
    expect(page.locator("#log")).to_contain_text("step 1")
    # Samples arrive over the WebSocket while it runs.
    wait_for_samples(page, 2)
    assert status_of(evaluation) == Status.RUNNING
    expect(page.locator("#resource-charts figure")).to_have_count(4)
    memory = page.locator("figure[data-series=memory_bytes]")
    expect(memory).to_contain_text("of 128.0 MiB")
    assert len(memory.locator("polyline").get_attribute("points").split()) >= 2

    page.wait_for_selector("#summary .status--succeeded", timeout=60_000)
    live_count = sample_count(page)
    # After the run, the stored samples draw the same graph on a fresh page.
    page.reload()
    wait_for_samples(page, 3)
    stored = sample_count(page)
    assert stored >= live_count - 1
    assert page.locator("#resources-empty").is_hidden()
    points = memory.locator("polyline").get_attribute("points").split()
    heights = [float(p.split(",")[1]) for p in points]
    assert min(heights) < max(heights)  # memory climbed: the line is not flat
    assert not page.problems, page.problems
