"""In a real browser, against the real stack: the log viewer (colours, carriage returns, line links,
search, folds, timestamps, downloads), the progress card, and the artifact previews.

Most evaluations here are written straight into the database as a finished run would leave them
(their output is exactly what the test says), and the page replays them over the WebSocket as for
any run. Screenshots at desktop (1280) and phone (390) widths go to tests/browser/output/log-viewer/.
"""

from __future__ import annotations

import io
import os
import re
import struct
import time
import zipfile
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.evaluations.models import Evaluation, Status
from apps.evaluations.tests.factories import add_artifact, add_chunk, make_evaluation
from tests.browser import test_evaluations_browser as evaluations_browser
from tests.browser.orm import orm
from tests.browser.test_evaluations_browser import submit
from tests.browser.watch import FrameWatch

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]

# The signed-in page and the runtimes, as the evaluation browser tests have them.
browser_page = evaluations_browser.browser_page
alice_page = evaluations_browser.alice_page
runtimes = evaluations_browser.runtimes

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


# The browser tests' output folder (``CRUCIBLE_SCREENSHOTS`` moves it), like the everyday tests'.
SCREENSHOTS = Path(os.environ.get("CRUCIBLE_SCREENSHOTS", Path(__file__).parent / "output")) / "log-viewer"


@pytest.fixture(scope="module")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {SCREENSHOTS}")
    return SCREENSHOTS


def shoot(page, folder, name: str, focus: str = ".log-card") -> None:
    """One screenshot at desktop width and one at phone width (``focus`` scrolled to the top), then back."""
    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.locator(focus).first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(folder / f"{name}-{width}.png"))
    page.set_viewport_size(DESKTOP)


def finished_with_output(owner, chunks: list[tuple[str, bytes]], **fields) -> Evaluation:
    """A succeeded evaluation whose stored output is ``chunks`` ((stream, bytes), in order)."""

    def build():
        evaluation = make_evaluation(owner, status=Status.SUCCEEDED, exit_code=0, reason="exit", **fields)
        for seq, (stream, data) in enumerate(chunks, start=1):
            add_chunk(evaluation, seq, data, stream)
        return evaluation

    return orm(build)


def open_log(page, evaluation, anchor: str = "") -> None:
    page.goto(f"{page.base}/evaluations/{evaluation.pk}/{anchor}")
    expect(page.locator("#log-connection")).to_contain_text("Finished")


def line(page, n: int):
    return page.locator(f"#L{n}")


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image (red pixels), made here so the test needs no image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# --- colours, carriage returns, escape sequences ------------------------------------------------


def test_colours_are_drawn_and_carriage_returns_rewrite_the_line(alice, alice_page, screenshots):
    page = alice_page
    evaluation = finished_with_output(
        alice,
        [
            ("stdout", b"\x1b[1;32mgreen and bold\x1b[0m then plain\n"),
            ("stdout", b"progress 10%\rprogress 50%\rprogress100%\r\n"),
            ("stdout", b"a\x1b]0;a window title\x07b\x1b[2Jc\x1b[?25l\n"),
            ("stdout", b"<b>not html</b> \x1b[38;5;208morange\x1b[0m \x1b[38;2;10;20;30mrgb\x1b[39m\n"),
            ("stderr", b"\x1b[3"),  # an escape sequence cut between two chunks
            ("stderr", b"1mred on stderr\x1b[0m\n"),
            ("stdout", b"downloading\r\x1b[Kdone\n"),
        ],
    )
    open_log(page, evaluation)
    expect(line(page, 6)).to_have_text("done\n")

    bold_green = line(page, 1).locator(".ansi-fg-2.ansi-bold")
    expect(bold_green).to_have_text("green and bold")
    assert line(page, 1).text_content() == "green and bold then plain\n"
    # A carriage return rewrites the line, as a terminal does; "\r\n" is a plain newline.
    assert line(page, 2).text_content() == "progress100%\n"
    # Other escape sequences (a window title, clear screen, hide cursor) are dropped, not printed.
    assert line(page, 3).text_content() == "abc\n"
    # Markup the program printed stays text; 256 and true colours come through the CSSOM.
    assert line(page, 4).text_content() == "<b>not html</b> orange rgb\n"
    assert page.locator("#log b").count() == 0
    assert line(page, 4).get_by_text("orange").evaluate("e => getComputedStyle(e).color") == "rgb(255, 135, 0)"
    # stderr is marked as such, and its colour survived being split between two chunks.
    expect(line(page, 5)).to_have_class(re.compile(r"\blog-line--stderr\b"))
    expect(line(page, 5).locator(".ansi-fg-1")).to_have_text("red on stderr")
    assert "\x1b" not in page.locator("#log").text_content()
    assert "[1;32m" not in page.locator("#log").text_content()
    assert not page.problems, page.problems
    shoot(page, screenshots, "log-colours")


# --- line links ---------------------------------------------------------------------------------


def test_a_line_link_opens_the_page_at_that_line_and_line_numbers_make_links(alice, alice_page, screenshots):
    page = alice_page
    evaluation = finished_with_output(alice, [("stdout", "".join(f"row {i}\n" for i in range(1, 3001)).encode())])
    open_log(page, evaluation, "#L1200")
    target = line(page, 1200)
    expect(target).to_have_class(re.compile(r"\blog-line--target\b"))
    expect(target).to_be_in_viewport()
    assert target.text_content() == "row 1200\n"
    expect(page.locator("#log-follow")).not_to_be_checked()  # the page stays at the line

    # Clicking a line's number (in the gutter at its left) makes it the page's address and marks it.
    line(page, 1210).click(position={"x": 12, "y": 6})
    assert page.url.endswith("#L1210")
    expect(line(page, 1210)).to_have_class(re.compile(r"\blog-line--target\b"))
    expect(target).not_to_have_class(re.compile(r"\blog-line--target\b"))
    # The numbers are not part of the text (copying the log copies the output only).
    assert "1210row" not in page.locator("#log").text_content()
    shoot(page, screenshots, "log-permalink")


def test_a_line_link_waits_for_a_live_run_to_reach_its_line(alice_page):
    page = alice_page
    evaluation_id = submit(
        page,
        "import time\nfor i in range(1, 61):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.05)\n",
    )
    page.goto(f"{page.base}/evaluations/{evaluation_id}/#L50")
    expect(line(page, 50)).to_have_class(re.compile(r"\blog-line--target\b"), timeout=30_000)
    expect(line(page, 50)).to_be_in_viewport()
    assert line(page, 50).text_content() == "tick 50\n"


# --- search -------------------------------------------------------------------------------------


def test_search_counts_matches_and_steps_through_them(alice, alice_page, screenshots):
    page = alice_page
    text = "".join(("a Needle here\n" if i in (100, 900, 1700) else f"hay {i}\n") for i in range(1, 2001))
    evaluation = finished_with_output(alice, [("stdout", text.encode()), ("stderr", b"needle on stderr\n")])
    open_log(page, evaluation)
    page.fill("#log-search", "needle")
    expect(page.locator("#log-search-count")).to_have_text("4 matches")
    page.press("#log-search", "Enter")
    expect(page.locator("#log-search-count")).to_have_text("1 of 4")
    expect(line(page, 100).locator("mark.log-match")).to_have_text("Needle")
    expect(line(page, 100)).to_be_in_viewport()
    page.click("#log-search-next")
    expect(page.locator("#log-search-count")).to_have_text("2 of 4")
    expect(line(page, 900).locator("mark.log-match")).to_be_in_viewport()
    assert line(page, 100).locator("mark").count() == 0  # one match is marked at a time
    page.click("#log-search-prev")
    page.click("#log-search-prev")
    expect(page.locator("#log-search-count")).to_have_text("4 of 4")  # it wraps around
    expect(line(page, 2001).locator("mark.log-match")).to_have_text("needle")
    page.fill("#log-search", "no such thing")
    expect(page.locator("#log-search-count")).to_have_text("No matches")
    page.fill("#log-search", "needle")
    page.press("#log-search", "Enter")
    expect(page.locator("#log-search-count")).to_have_text("1 of 4")
    shoot(page, screenshots, "log-search")


# --- folds --------------------------------------------------------------------------------------


def test_group_sections_fold_and_unfold(alice, alice_page, screenshots):
    page = alice_page
    evaluation = finished_with_output(
        alice,
        [
            ("stdout", b"before\n::group::Install dependencies\nstep one\nstep two\n::endgroup::\n"),
            ("stdout", b"::group::Run tests\ntest a ok\ntest b ok\n::endgroup::\nafter\n"),
        ],
    )
    open_log(page, evaluation)
    install = page.get_by_role("button", name="Install dependencies")
    expect(install).to_have_attribute("aria-expanded", "false")  # a finished group is folded
    expect(page.get_by_text("step one")).to_be_hidden()
    expect(page.get_by_text("after")).to_be_visible()
    expect(page.locator("#log")).not_to_contain_text("::group::")
    install.click()
    expect(install).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_text("step one")).to_be_visible()
    expect(page.get_by_text("test a ok")).to_be_hidden()
    # A search match inside a folded group unfolds it.
    page.fill("#log-search", "test b")
    page.press("#log-search", "Enter")
    expect(page.locator("mark.log-match")).to_be_visible()
    expect(page.get_by_role("button", name="Run tests")).to_have_attribute("aria-expanded", "true")
    shoot(page, screenshots, "log-groups")
    install.click()
    expect(page.get_by_text("step one")).to_be_hidden()


# --- timestamps and downloads -------------------------------------------------------------------


def test_timestamps_show_when_each_line_was_written(alice, alice_page, screenshots):
    page = alice_page
    evaluation = finished_with_output(alice, [("stdout", b"first\n"), ("stderr", b"second\n")])
    open_log(page, evaluation)
    first = line(page, 1)
    shown = "e => getComputedStyle(e, '::after').content"
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", first.get_attribute("data-ts"))
    assert first.evaluate(shown) == "none"
    page.check("#log-timestamps")
    assert first.evaluate(shown) == f'"{first.get_attribute("data-ts")}"'
    # The time is drawn beside the number, not over the text.
    assert first.evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)") > 100
    assert page.locator("#log").text_content() == "first\nsecond\n"  # times are not part of the text
    shoot(page, screenshots, "log-timestamps")


def test_the_output_downloads_as_plain_text_per_stream(alice, alice_page):
    page = alice_page
    evaluation = finished_with_output(
        alice, [("stdout", b"out 1\n"), ("stderr", b"err 1\n"), ("stdout", b"\x1b[1mout 2\x1b[0m\n")]
    )
    open_log(page, evaluation)
    expected = {
        "both": b"out 1\nerr 1\n\x1b[1mout 2\x1b[0m\n",
        "stdout": b"out 1\n\x1b[1mout 2\x1b[0m\n",
        "stderr": b"err 1\n",
    }
    for stream, content in expected.items():
        with page.expect_download() as download_info:
            page.click(f"#log-download-{stream}")
        download = download_info.value
        assert download.suggested_filename == f"evaluation-{str(evaluation.pk)[:8]}-{stream}.txt"
        assert open(download.path(), "rb").read() == content


# --- following ----------------------------------------------------------------------------------


def test_jump_to_latest_is_hidden_while_following(alice, alice_page):
    page = alice_page
    evaluation = finished_with_output(alice, [("stdout", "".join(f"row {i}\n" for i in range(2000)).encode())])
    open_log(page, evaluation)
    expect(page.locator("#log-follow")).to_be_checked()
    expect(page.locator("#log-jump")).to_be_hidden()
    page.locator("#log").evaluate("l => { l.scrollTop = 0; }")
    expect(page.locator("#log-jump")).to_be_visible()
    page.locator("#log-jump").click()
    expect(page.locator("#log-jump")).to_be_hidden()
    expect(page.locator("#log-follow")).to_be_checked()


# --- 100 000 lines ------------------------------------------------------------------------------


def test_a_finished_log_of_a_hundred_thousand_lines_loads_smoothly(alice, alice_page, screenshots):
    page = alice_page
    lines = [f"line {i} \x1b[32mok\x1b[0m\n" for i in range(1, 100_001)]
    evaluation = finished_with_output(
        alice, [("stdout", "".join(lines[i : i + 1000]).encode()) for i in range(0, 100_000, 1000)]
    )
    page.goto(f"{page.base}/evaluations/")
    FrameWatch.reset(page)
    started = time.monotonic()
    page.goto(f"{page.base}/evaluations/{evaluation.pk}/")
    expect(page.locator("#log-connection")).to_contain_text("Finished", timeout=60_000)
    expect(line(page, 100_000)).to_have_text("line 100000 ok\n", timeout=60_000)
    loaded_s = time.monotonic() - started
    frames = FrameWatch.read(page)
    print(f"a finished 100 000-line log: on the page in {loaded_s:.2f} s; frames {frames}")
    FrameWatch.assert_did_not_freeze(frames)
    expect(page.locator("#log-lines")).to_have_text("100,000")
    # Searching and jumping stay usable at this size.
    page.fill("#log-search", "line 54321 ")
    page.press("#log-search", "Enter")
    expect(page.locator("#log-search-count")).to_have_text("1 of 1")
    expect(line(page, 54321)).to_be_in_viewport()
    shoot(page, screenshots, "log-100k")


# --- progress -----------------------------------------------------------------------------------


def test_a_queued_run_shows_its_place_in_the_queue_and_an_estimate(alice, bob, alice_page, screenshots):
    page = alice_page

    def build():
        now = timezone.now()
        for seconds in (20, 40, 60):  # recent runs: typically 40 s
            make_evaluation(
                bob,
                status=Status.SUCCEEDED,
                started_at=now - timedelta(seconds=seconds + 5),
                finished_at=now - timedelta(seconds=5),
                duration_ms=seconds * 1000,
            )
        make_evaluation(bob, created_at=now - timedelta(minutes=3))
        make_evaluation(bob, created_at=now - timedelta(minutes=2))
        make_evaluation(bob, created_at=now + timedelta(minutes=1))  # after alice's: not ahead of her
        return make_evaluation(alice, created_at=now - timedelta(minutes=1))

    evaluation = orm(build)  # not on a work queue: it stays queued while the page is open
    page.goto(f"{page.base}/evaluations/{evaluation.pk}/")
    expect(page.locator("#queue-position")).to_contain_text("position 3")
    expect(page.locator("#queue-position")).to_contain_text("of 4 waiting")
    # Two runs ahead, nothing running (one slot), 40 s each: 80 s.
    expect(page.locator("#queue-estimate")).to_have_text("about 1 min")
    # Another run ahead of hers ends: the card follows (it is polled while the run waits).
    first = orm(lambda: Evaluation.objects.filter(owner=bob, status=Status.QUEUED).order_by("created_at").first())
    orm(lambda: Evaluation.objects.filter(pk=first.pk).update(status=Status.CANCELLED, finished_at=timezone.now()))
    expect(page.locator("#queue-position")).to_contain_text("position 2", timeout=15_000)
    shoot(page, screenshots, "progress-queued", "#summary")


def test_a_running_run_shows_elapsed_time_output_and_peak_memory_while_it_runs(alice_page, screenshots):
    page = alice_page
    # Its output comes over 10 s, then it waits to be cancelled: still running however slow the checks.
    evaluation_id = submit(
        page,
        "import time\nblock = bytearray(40 * 1024 * 1024)\n"
        "for i in range(200):\n    print('x' * 99, flush=True)\n    time.sleep(0.05)\ntime.sleep(600)\n",
    )
    expect(page.locator("#run-progress")).to_be_visible(timeout=30_000)
    expect(page.locator("#run-output")).not_to_have_text(re.compile(r"^0\xa0bytes$"), timeout=15_000)
    expect(page.locator("#run-peak")).to_have_text(re.compile(r"MiB"), timeout=15_000)
    expect(page.locator("#run-elapsed")).not_to_have_text("0", timeout=10_000)
    expect(page.locator('#summary [data-field="output"]')).to_contain_text("so far")
    assert orm(lambda: Evaluation.objects.get(pk=evaluation_id).status) == Status.RUNNING
    shoot(page, screenshots, "progress-running", "#progress")
    expect(page.locator("#run-output")).to_have_text(re.compile(r"19\.\d\s+KiB"), timeout=60_000)
    page.locator("#cancel-open").click()
    page.locator("#cancel-confirm").click()
    page.wait_for_selector("#summary .status--cancelled", timeout=60_000)
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator('#summary [data-field="output"]')).to_have_text(re.compile(r"19\.\d\s+KiB"))


# --- artifacts ----------------------------------------------------------------------------------


def test_artifacts_preview_inline_and_download_as_one_zip(alice, alice_page, screenshots):
    page = alice_page

    def build():
        evaluation = make_evaluation(alice, status=Status.SUCCEEDED, exit_code=0, reason="exit")
        add_chunk(evaluation, 1, b"wrote 4 files\n")
        add_artifact(evaluation, "notes.txt", b"first line\n<script>alert(1)</script>\n")
        add_artifact(evaluation, "plots/red.png", png(40, 20))
        add_artifact(evaluation, "fake.png", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(2)'/>")
        add_artifact(evaluation, "weights.bin", b"\x00\x01\x02\xff" * 10)
        return evaluation

    evaluation = orm(build)
    open_log(page, evaluation)
    notes = page.locator(".artifact", has_text="notes.txt")
    notes.get_by_text("Preview text").click()
    expect(notes.locator("pre")).to_have_text("first line\n<script>alert(1)</script>\n")
    image = page.locator(".artifact", has_text="plots/red.png")
    image.get_by_text("Preview image").click()
    expect(image.locator("img")).to_be_visible()
    page.wait_for_function("() => document.querySelector('.artifact[data-kind=image] img').naturalWidth === 40")
    # A "png" that is really SVG markup is no image: it previews as text, and never runs.
    fake = page.locator(".artifact", has_text="fake.png")
    assert fake.get_attribute("data-kind") == "text"
    fake.get_by_text("Preview text").click()
    expect(fake.locator("pre")).to_contain_text("onload")
    assert page.locator(".artifact", has_text="weights.bin").locator("details").count() == 0  # binary: download only
    assert page.dialogs == [] and page.locator("#summary script, #summary svg").count() == 0
    shoot(page, screenshots, "artifacts", ".artifacts-head")

    with page.expect_download() as download_info:
        page.click("#artifacts-zip")
    archive = zipfile.ZipFile(io.BytesIO(open(download_info.value.path(), "rb").read()))
    assert sorted(archive.namelist()) == ["fake.png", "notes.txt", "plots/red.png", "weights.bin"]
    assert archive.read("plots/red.png") == png(40, 20)
    assert not page.problems, page.problems
