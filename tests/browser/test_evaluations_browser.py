"""In a real browser, against the real stack (Daphne + worker + Docker): submit, watch live, cancel, XSS."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.accounts.tests.conftest import forget_sign_in_throttles
from apps.evaluations import services
from apps.evaluations.models import Evaluation, OutputChunk, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from tests.browser import chromium
from tests.browser.orm import orm
from tests.browser.watch import FrameWatch, SocketWatch, poll

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

PASSWORD = "alice-password-1"  # the root conftest's alice


@pytest.fixture(autouse=True)
def runtimes(transactional_db):
    """Transactional tests flush the tables, data migrations included: put the runtimes back."""
    ensure_default_runtimes(Runtime)


def status_of(evaluation_id) -> str:
    return orm(lambda: Evaluation.objects.values_list("status", flat=True).get(pk=evaluation_id))


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    forget_sign_in_throttles()
    with sync_playwright() as p:
        browser = chromium.launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        FrameWatch.on(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.problems = []
        page.dialogs = []
        page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))

        def on_dialog(dialog):
            page.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        yield page
        context.close()
        browser.close()


@pytest.fixture
def alice_page(alice, live_stack, browser_page):
    """Signed in as alice through the sign-in form."""
    page = browser_page
    page.goto(f"{live_stack.url}/accounts/login/")
    page.fill("input[name=login]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.stack-form button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("header").get_by_text("alice").is_visible()
    page.base = live_stack.url
    page.stack = live_stack
    return page


def set_code(page, code: str) -> None:
    """Put ``code`` in the form's code field, whether CodeMirror covers it or the plain textarea shows."""
    page.locator("textarea[name=code]").evaluate(
        "(area, code) => { area.value = code; area.dispatchEvent(new CustomEvent('crucible:replaced')); }", code
    )


def submit(page, code: str, *, timeout_s: str = "30") -> str:
    page.goto(f"{page.base}/evaluations/new/")
    set_code(page, code)
    page.select_option("select[name=language]", "python")
    page.fill("input[name=timeout_s]", timeout_s)
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/evaluations/[0-9a-f-]{36}/$"))
    return page.url.rstrip("/").rsplit("/", 1)[1]


def log_text(page) -> str:
    return page.locator("#log").text_content()


def test_submit_from_the_form_and_watch_lines_arrive_live(alice_page):
    page = alice_page
    evaluation_id = submit(
        page,
        "import sys, time\n"
        "for i in range(1, 9):\n"
        "    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.4)\n"
        "print('a warning', file=sys.stderr, flush=True)\n"
        "print('done')\n",
    )
    # The first lines are on the page while the program is still running.
    expect(page.locator("#log")).to_contain_text("line 2")
    assert "done" not in log_text(page)
    assert status_of(evaluation_id) == Status.RUNNING
    expect(page.locator("#log")).to_contain_text("done")
    page.wait_for_selector("#summary .status--succeeded")
    text = log_text(page)
    assert all(text.count(f"line {i}\n") == 1 for i in range(1, 9))  # each line exactly once
    assert page.locator(".log__chunk--stderr").filter(has_text="a warning").count() == 1
    assert page.locator(".log__chunk--stdout").filter(has_text="a warning").count() == 0
    assert "Finished: succeeded, exit code 0" in page.locator("#log-connection").text_content()
    assert page.locator("#summary [data-field=exit_code]").text_content().strip() == "0"
    assert not page.problems, page.problems


def test_cancel_a_running_evaluation_from_its_page(alice_page):
    page = alice_page
    evaluation_id = submit(
        page, "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.2)\n", timeout_s="60"
    )
    expect(page.locator("#log")).to_contain_text("started")
    page.locator("#cancel-open").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    page.wait_for_selector("#summary .status--cancelled", timeout=30_000)
    assert status_of(evaluation_id) == Status.CANCELLED
    assert page.locator("#cancel-open").count() == 0  # no Cancel button on a finished evaluation
    assert not page.problems, page.problems


def test_a_program_printing_a_script_tag_shows_it_as_text(alice_page):
    page = alice_page
    submit(page, "print('<script>alert(1)</script>')\nprint('<img src=x onerror=alert(2)>')\n")
    page.wait_for_selector("#summary .status--succeeded")
    expect(page.locator("#log")).to_contain_text("onerror")
    assert "<script>alert(1)</script>\n<img src=x onerror=alert(2)>\n" in log_text(page)
    assert page.locator("#log script, #log img").count() == 0
    # Nothing the program printed became an element anywhere on the page, so nothing can ever run.
    assert page.locator("img[src=x], script:not([src])").count() == 0
    assert page.dialogs == []
    assert not page.problems, page.problems


def test_a_reload_replays_the_whole_log_once(alice_page):
    page = alice_page
    submit(page, "for i in range(2000):\n    print(f'row {i}')\n")
    page.wait_for_selector("#summary .status--succeeded")
    page.reload()
    expect(page.locator("#log-connection")).to_contain_text("Finished")
    expect(page.locator("#log")).to_contain_text("row 1999")
    text = log_text(page)
    assert text == "".join(f"row {i}\n" for i in range(2000))


def test_a_hundred_thousand_lines_do_not_freeze_the_page(alice_page):
    page = alice_page
    submit(page, "for i in range(100_000):\n    print(i)\n")
    FrameWatch.reset(page)  # from here on the page is receiving and drawing the output
    page.wait_for_selector("#summary .status--succeeded", timeout=60_000)
    expect(page.locator("#log-connection")).to_contain_text("Finished")
    expect(page.locator("#log-lines")).to_have_text("100,000")
    # While the lines streamed in, the page kept drawing frames and never ran one task for seconds.
    frames = FrameWatch.read(page)
    assert frames["frames"] >= 10, frames
    FrameWatch.assert_did_not_freeze(frames)
    print(f"while 100 000 lines streamed: {frames}")
    # The last line is on screen (following the output).
    assert log_text(page).endswith("99998\n99999\n")
    assert (
        page.evaluate(
            "(() => { const l = document.getElementById('log'); "
            "return l.scrollHeight - l.scrollTop - l.clientHeight; })()"
        )
        < 30
    )
    # Scrolling up pauses following; the button brings it back.
    # (reading scrollTop back makes the browser lay the 100 000 lines out before the scroll event)
    # The scroll event of a 100 000-line log can take seconds to arrive on a loaded 2-core machine.
    assert page.locator("#log").evaluate("l => { l.scrollTop = 0; return l.scrollTop; }") == 0
    expect(page.locator("#log-jump")).to_be_visible(timeout=20_000)
    expect(page.locator("#log-follow")).not_to_be_checked()
    page.locator("#log-jump").click()
    expect(page.locator("#log-follow")).to_be_checked(timeout=20_000)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path="/tmp/crucible-detail-phone.png", full_page=False)


def test_the_live_log_reconnects_mid_run_without_losing_or_repeating_lines(alice_page):
    page = alice_page
    log_sockets = SocketWatch.on(page, "/ws/evaluations/")
    evaluation_id = submit(
        page,
        "import time\nfor i in range(1, 100_000):\n    print(f'line {i}', flush=True)\n    time.sleep(0.05)\n",
        timeout_s="120",
    )
    expect(page.locator("#log")).to_contain_text("line 10\n")

    # The server goes away under the page (Daphne killed) while the program keeps printing.
    page.stack.kill_web()
    expect(page.locator("#log-connection")).to_contain_text("reconnecting")
    shown_before = len(log_text(page).splitlines())
    page.stack.start_web_again()

    # The page reconnects by itself, asking only for what it has not seen, and keeps following live.
    poll(page, lambda: len(log_sockets.urls) >= 2, what="a second WebSocket")
    after = int(log_sockets.urls[1].rsplit("after=", 1)[1])
    assert after > 0
    expect(page.locator("#log-connection")).to_contain_text("Live")
    expect(page.locator("#log")).to_contain_text(f"line {shown_before + 40}\n", timeout=60_000)
    assert status_of(evaluation_id) == Status.RUNNING  # it was followed live, not replayed at the end

    orm(lambda: services.cancel(Evaluation.objects.get(pk=evaluation_id)))
    expect(page.locator("#log-connection")).to_contain_text("Finished", timeout=60_000)
    stored = orm(
        lambda: b"".join(
            OutputChunk.objects.filter(evaluation_id=evaluation_id, stream="stdout")
            .order_by("seq")
            .values_list("data", flat=True)
        ).decode()
    )
    printed = len(stored.splitlines())
    assert printed > shown_before + 40
    # Every line exactly once, in order: what the page shows is what was stored.
    shown = "".join(page.locator(".log__chunk--stdout").all_text_contents())
    assert shown == stored == "".join(f"line {i}\n" for i in range(1, printed + 1))
    # The only errors: connection attempts refused while the server was down.
    assert all("ERR_CONNECTION_REFUSED" in problem for problem in page.problems), page.problems
