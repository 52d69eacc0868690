"""In a real browser, against a real Daphne, session host and sandbox: alice watches her session's page
while an agent (here: the API, as the SDK calls it) runs execs in it, and ends it from the page."""

from __future__ import annotations

import threading

import pytest
import requests
from playwright.sync_api import expect

from apps.accounts.models import ApiToken
from apps.accounts.tests.conftest import forget_sign_in_throttles
from apps.sessions.models import Session
from tests.browser import chromium
from tests.browser.orm import orm
from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

PASSWORD = "alice-password-1"  # the root conftest's alice
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"
# Waits for the file "go" (written by a second exec once the page shows this one running), then speaks.
GATED = ["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; printf '%s\\n' \"$1\"; echo warn >&2", "gated", HOSTILE]


@pytest.fixture
def agent(live_sessions_stack, alice):  # noqa: F811
    """Alice's API client, as her agent would use it."""
    http = requests.Session()
    http.headers["Authorization"] = f"Token {ApiToken.issue(alice, 'agent')[1]}"
    http.base = f"{live_sessions_stack.url}/api/v1/sandboxes/"
    return http


@pytest.fixture
def alice_page(alice, agent, live_sessions_stack):  # noqa: F811 (agent first: its token is made before Playwright runs)
    from playwright.sync_api import sync_playwright

    forget_sign_in_throttles()
    with sync_playwright() as p:
        browser = chromium.launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.problems, page.dialogs = [], []
        page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{live_sessions_stack.url}/accounts/login/")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("form.stack-form button[type=submit]")
        page.wait_for_load_state()
        page.base = live_sessions_stack.url
        yield page
        context.close()
        browser.close()


def test_alice_watches_steps_appear_and_complete_live_then_ends_the_session(agent, alice_page):
    page = alice_page
    created = agent.post(agent.base, json={"metadata": {"sample": "browser"}}, timeout=60)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    page.goto(f"{page.base}/sessions/{sid}/")
    expect(page.locator("#transcript-connection")).to_have_text("Live · ready")
    expect(page.locator("#transcript-empty")).to_be_visible()

    first = agent.post(f"{agent.base}{sid}/exec/", json={"cmd": ["echo", "one"]}, timeout=60).json()
    step1 = page.locator('#transcript li[data-seq="1"]')
    expect(step1).to_have_attribute("data-status", "done")
    expect(step1.locator(".step__stream--stdout .step__output")).to_have_text("one\n")
    assert first["seq"] == 1

    answers = {}
    gated = threading.Thread(
        target=lambda: answers.update(
            gated=agent.post(f"{agent.base}{sid}/exec/", json={"cmd": GATED, "timeout_s": 120}, timeout=180).json()
        )
    )
    gated.start()
    try:
        step2 = page.locator('#transcript li[data-seq="2"]')
        expect(step2).to_have_attribute("data-status", "running")  # on the page while it runs
        expect(step2.locator(".step__outcome")).to_have_text("running…")
        release = agent.post(f"{agent.base}{sid}/exec/", json={"cmd": ["touch", "go"]}, timeout=60).json()
        assert release["returncode"] == 0
    finally:
        gated.join(timeout=180)
    assert answers["gated"]["returncode"] == 0
    expect(step2).to_have_attribute("data-status", "done")
    expect(step2.locator(".step__stream--stdout .step__output")).to_have_text(HOSTILE + "\n")  # as text
    expect(step2.locator(".step__stream--stderr .step__output")).to_have_text("warn\n")
    expect(page.locator('#transcript li[data-seq="3"]')).to_have_attribute("data-status", "done")
    assert page.locator("#transcript img, #transcript script").count() == 0
    expect(page.locator('#summary [data-field="step_count"]')).to_have_text("3")
    assert [int(s) for s in page.locator("#transcript li").evaluate_all("els => els.map(e => e.dataset.seq)")] == [
        1,
        2,
        3,
    ]

    # The agent ends the session: the page shows it at once, without a reload.
    assert agent.delete(f"{agent.base}{sid}/", timeout=60).status_code == 202
    expect(page.locator("#transcript-connection")).to_have_text("Ended: deleted")
    expect(page.locator("#summary [data-status-badge]")).to_have_text("Ended")
    expect(page.locator("#end-open")).to_have_count(0)
    page.reload()
    expect(page.locator("#transcript-connection")).to_have_text("Ended: deleted")
    expect(page.locator("#transcript li")).to_have_count(3)  # the replay: each step once
    assert not page.dialogs and not page.problems, (page.dialogs, page.problems)


def test_alice_ends_a_session_with_the_button_on_its_page(agent, alice_page):
    page = alice_page
    created = agent.post(agent.base, json={}, timeout=60)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    page.goto(f"{page.base}/sessions/{sid}/")
    expect(page.locator("#transcript-connection")).to_have_text("Live · ready")
    page.locator("#end-open").click()
    page.locator("#end-confirm").click()
    expect(page.locator("#summary [data-status-badge]")).to_have_text("Ended")
    expect(page.locator("#transcript-connection")).to_have_text("Ended: deleted")
    assert orm(lambda: Session.objects.get(pk=sid).end_reason) == "deleted"
    assert agent.post(f"{agent.base}{sid}/exec/", json={"cmd": ["true"]}, timeout=60).status_code == 409
    assert not page.dialogs and not page.problems, (page.dialogs, page.problems)
