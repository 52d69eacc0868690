"""Everyday use in a real browser (issue 16): telling runs apart, comparing them, local times, dark mode.

Rows are made directly in the database (nothing here needs a sandbox, except the form test). Each
test saves screenshots at desktop (1280 wide) and phone (390 wide) widths in ``SCREENSHOTS``.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.accounts.tests.conftest import forget_sign_in_throttles
from apps.audit.services import record
from apps.evaluations.models import Evaluation, Runtime, Status
from apps.evaluations.runtimes import ensure_default_runtimes
from apps.evaluations.tests.factories import add_chunk, make_evaluation
from apps.monitoring.alerts import raise_alert
from tests.browser import chromium
from tests.browser.orm import orm
from tests.browser.test_evaluations_browser import set_code
from tests.stack import live_stack  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORDS = {"alice": "alice-password-1", "olivia": "olivia-password-1"}  # the root conftest's people
SCREENSHOTS = Path(os.environ.get("CRUCIBLE_SCREENSHOTS", Path(__file__).parent / "output"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(autouse=True)
def runtimes(transactional_db):
    """Transactional tests flush the tables, data migrations included: put the runtimes back."""
    ensure_default_runtimes(Runtime)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    forget_sign_in_throttles()
    with sync_playwright() as p:
        browser = chromium.launch(p)
        yield browser
        browser.close()


@pytest.fixture
def open_as_alice(alice, live_stack, browser):  # noqa: F811
    """A function that opens a signed-in page: ``open_as_alice(viewport=…, user="alice", **context options)``."""
    contexts = []

    def open_page(viewport=DESKTOP, user="alice", **options):
        context = browser.new_context(viewport=viewport, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.problems = []
        page.on("console", lambda msg: page.problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page.problems.append(str(exc)))
        page.goto(f"{live_stack.url}/accounts/login/")
        page.fill("input[name=login]", user)
        page.fill("input[name=password]", PASSWORDS[user])
        page.click("form.stack-form button[type=submit]")
        page.wait_for_load_state()
        page.base = live_stack.url
        return page

    yield open_page
    for context in contexts:
        context.close()


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def both_widths(open_as_alice, path: str, name: str, **options):
    """Open ``path`` at desktop and phone widths, screenshot both; returns the desktop page."""
    phone = open_as_alice(viewport=PHONE, **options)
    phone.goto(f"{phone.base}{path}")
    phone.wait_for_load_state("networkidle")
    shoot(phone, f"{name}-phone")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "the phone page scrolls sideways"
    desktop = open_as_alice(**options)
    desktop.goto(f"{desktop.base}{path}")
    desktop.wait_for_load_state("networkidle")
    shoot(desktop, f"{name}-desktop")
    assert not phone.problems and not desktop.problems, (phone.problems, desktop.problems)
    return desktop


def test_the_list_shows_names_and_labels_and_a_label_filters_it(open_as_alice, alice):
    tagged = orm(lambda: make_evaluation(alice, name="Fixed off-by-one", labels=["exp-3", "model=gpt-4"]))
    orm(lambda: make_evaluation(alice, status=Status.OOM_KILLED, name="Memory hog", duration_ms=123_456))
    orm(lambda: make_evaluation(alice, status=Status.CANCELLED, labels=["exp-4"]))
    page = both_widths(open_as_alice, "/", "list")
    row = page.locator(f"#row-{tagged.pk}")
    expect(row.locator(".eval-name")).to_have_text("Fixed off-by-one")
    expect(page.locator("tbody .status--oom_killed")).to_have_text("OOM killed")
    expect(page.locator("span[title='123456 ms']")).to_have_text("2 min 3 s")
    # "Cancelled" is a choice the user made, not an error: not struck through.
    decoration = page.locator(".status--cancelled").evaluate("e => getComputedStyle(e).textDecorationLine")
    assert decoration == "none"
    row.get_by_role("link", name="exp-3").click()
    page.wait_for_url(re.compile(r"\?label=exp-3$"))
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("#filter-label")).to_have_value("exp-3")


def test_the_list_filters_by_language_and_date(open_as_alice, alice):
    orm(lambda: make_evaluation(alice, language="bash", name="a bash run"))
    orm(lambda: make_evaluation(alice, name="a python run"))
    page = open_as_alice()
    page.goto(f"{page.base}/")
    page.select_option("#filter-language", "bash")
    page.fill("#filter-after", "2020-01-01")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody")).to_contain_text("a bash run")
    page.fill("#filter-before", "2020-01-02")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No evaluation matches these filters")).to_be_visible()


def test_times_are_shown_in_the_viewers_zone_with_its_name(open_as_alice, alice):
    evaluation = orm(lambda: make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0))
    utc = evaluation.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    page = open_as_alice(timezone_id="Asia/Kolkata")  # UTC+5:30 all year: no daylight saving to reckon with
    page.goto(f"{page.base}/evaluations/{evaluation.pk}/")
    created = page.locator("#summary time").first
    expect(created).to_have_attribute("title", utc)
    local = created.text_content()
    assert local != utc and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (GMT\+5:30|IST)", local), local
    # The list says how long ago, with the exact local time on hover.
    page.goto(f"{page.base}/")
    expect(page.locator("tbody time")).to_have_text(re.compile(r"just now|seconds? ago|minutes? ago"))
    assert utc in page.locator("tbody time").get_attribute("title")


def test_the_detail_header_names_the_run_links_its_reruns_and_compares_them(open_as_alice, alice):
    original = orm(
        lambda: make_evaluation(alice, status=Status.FAILED, exit_code=1, name="first try", labels=["exp-3"])
    )
    again = orm(
        lambda: make_evaluation(
            alice,
            status=Status.SUCCEEDED,
            exit_code=0,
            code="print(1)\nprint(3)\n",
            name="first try",
            metadata={"rerun_of": str(original.pk)},
            memory_mb=256,
        )
    )
    orm(lambda: add_chunk(original, 1, b"1\n2\n"))
    orm(lambda: add_chunk(again, 1, b"1\n3\n"))
    page = both_widths(open_as_alice, f"/evaluations/{again.pk}/", "detail-header")
    expect(page.locator(".eval-title__name")).to_have_text("first try")
    expect(page.locator("#rerun-of-link")).to_contain_text(str(original.pk)[:8])
    # The header's content starts where the site header's does (the page is wide: both widen).
    brand_x = page.locator(".brand").bounding_box()["x"]
    assert abs(page.locator("h1.eval-title").bounding_box()["x"] - brand_x) < 2
    page.locator("#rerun-of-link").click()
    page.wait_for_url(f"{page.base}/evaluations/{original.pk}/")
    expect(page.locator(".rerun-link")).to_contain_text(str(again.pk)[:8])
    page.fill("#compare-with", str(again.pk)[:8])
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r"/evaluations/compare/\?"))
    expect(page.locator("#code-diff .diff__add")).to_have_text(["+print(1)", "+print(3)"])
    expect(page.locator("#output-diff .diff__remove")).to_have_text(["-2"])
    expect(page.locator(".compare-table__differs th", has_text="Status")).to_have_count(1)
    expect(page.locator(".compare-table__differs th", has_text="Language")).to_have_count(0)
    both_widths(open_as_alice, page.url.removeprefix(page.base), "compare")


def test_dark_mode_follows_the_system_setting(open_as_alice, alice):
    orm(lambda: make_evaluation(alice, name="in the dark", labels=["exp-3"], status=Status.TIMED_OUT))
    page = both_widths(open_as_alice, "/", "list-dark", color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(19, 22, 26)", background
    light = open_as_alice(color_scheme="light")
    light.goto(f"{light.base}/")
    assert light.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(245, 246, 248)"


@pytest.mark.docker
def test_the_form_names_and_labels_a_run(open_as_alice):
    page = open_as_alice()
    page.goto(f"{page.base}/evaluations/new/")
    set_code(page, "print('named')")
    page.fill("input[name=name]", "my named run")
    page.fill("input[name=labels]", "exp-9, model=small")
    shoot(page, "form-desktop")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/evaluations/[0-9a-f-]{36}/$"))
    expect(page.locator(".eval-title__name")).to_have_text("my named run")
    expect(page.locator(".labels .label-chip")).to_have_text(["exp-9", "model=small"])
    evaluation = orm(lambda: Evaluation.objects.get(pk=uuid.UUID(page.url.rstrip("/").rsplit("/", 1)[1])))
    assert evaluation.labels == ["exp-9", "model=small"]
    phone = open_as_alice(viewport=PHONE)
    phone.goto(f"{phone.base}/evaluations/new/")
    shoot(phone, "form-phone")


def test_olivia_acknowledges_alerts_in_bulk_and_reads_audit_details_as_json(olivia, open_as_alice):
    alerts = [
        orm(lambda n=n: raise_alert(evaluation_id=uuid.uuid4(), rule_name=n, severity="warning", message="m"))
        for n in ("first", "second", "third")
    ]
    orm(lambda: record("evaluation.stop", actor=olivia, target="x", reason="runaway", count=2))
    page = both_widths(open_as_alice, "/monitoring/alerts/", "alerts", user="olivia")
    for alert in alerts[:2]:
        page.locator(f"tr[data-alert-id='{alert.pk}'] input[type=checkbox]").check()
    page.locator("#acknowledge-selected").click()
    expect(page.locator(".messages")).to_contain_text("2 alerts acknowledged.")
    expect(page.locator("tr.alert-row")).to_have_count(1)
    expect(page.locator(f"tr[data-alert-id='{alerts[2].pk}']")).to_be_visible()
    page.goto(f"{page.base}/monitoring/audit/")
    expect(page.locator(".audit-details", has_text="runaway")).to_have_text('{"count": 2, "reason": "runaway"}')
    both_widths(open_as_alice, "/monitoring/audit/", "audit", user="olivia")


@pytest.mark.docker
def test_the_code_editor_highlights_numbers_lines_and_loads_a_file(open_as_alice, tmp_path):
    page = open_as_alice()
    page.goto(f"{page.base}/evaluations/new/")
    editor = page.locator(".cm-editor")
    expect(editor).to_be_visible()  # CodeMirror, bundled at build time, over the form's textarea
    expect(page.locator("textarea[name=code]")).to_be_hidden()
    page.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.type("import sys\nprint(sys.argv)\n")
    expect(page.locator(".cm-lineNumbers .cm-gutterElement", has_text="3")).to_be_visible()
    keyword = page.locator(".cm-line span", has_text="import").first
    plain = page.locator(".cm-line").nth(1)
    assert keyword.evaluate("e => getComputedStyle(e).color") != plain.evaluate("e => getComputedStyle(e).color")
    script = tmp_path / "loop.sh"
    script.write_text('for i in 1 2 3; do\n  echo "line $i"\ndone\n')
    page.set_input_files("#code-file", str(script))
    expect(page.locator("#code-file-status")).to_have_text("Loaded loop.sh (4 lines).")
    expect(page.locator("select[name=language]")).to_have_value("bash")
    expect(page.locator(".cm-content")).to_contain_text('echo "line $i"')
    shoot(page, "editor-desktop")
    phone = open_as_alice(viewport=PHONE)
    phone.goto(f"{phone.base}/evaluations/new/")
    expect(phone.locator(".cm-editor")).to_be_visible()
    shoot(phone, "editor-phone")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/evaluations/[0-9a-f-]{36}/$"))
    evaluation = orm(lambda: Evaluation.objects.get(pk=uuid.UUID(page.url.rstrip("/").rsplit("/", 1)[1])))
    assert (evaluation.language, evaluation.code) == ("bash", script.read_text())
    assert not page.problems and not phone.problems, (page.problems, phone.problems)  # nothing the CSP refused
