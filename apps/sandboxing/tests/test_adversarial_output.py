"""Adversarial cases 18-21 (output the platform must handle), at the runner level.

The runner hands output on as raw bytes, exactly as written; decoding, escaping and rendering are
the storage/presentation layers' job (tested there). Cases 5 and 6 (floods) are in
test_adversarial_resources.py.
"""

import pytest

from apps.sandboxing.tests.conftest import execute

pytestmark = pytest.mark.docker


# 18
def test_invalid_utf8_and_nul_bytes_are_passed_on_byte_for_byte():
    run = execute("import os\nos.write(1, b'ok\\x00\\xff\\xfe\\xc3(\\x80end')\nos.write(2, b'\\x00\\xed\\xa0\\x80')")
    assert run.result.outcome == "exited"
    assert run.stdout == b"ok\x00\xff\xfe\xc3(\x80end"
    assert run.stderr == b"\x00\xed\xa0\x80"


# 19
def test_html_and_script_tags_are_passed_on_as_plain_bytes():
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    run = execute(f"print({payload!r})")
    assert run.stdout == payload.encode() + b"\n"


# 20
def test_ansi_escape_sequences_are_passed_on_unchanged():
    run = execute(r"print('\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J')")
    assert run.stdout == b"\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2J\n"


# 21
def test_exit_code_3_is_reported_as_a_plain_exit():
    run = execute("import sys; sys.exit(3)")
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == ("exited", 3, None)


def test_death_by_sigsegv_reports_the_signal():
    run = execute("import ctypes; ctypes.string_at(0)")
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == ("exited", 139, 11)


def test_killing_itself_with_sigkill_is_a_plain_signal_death_not_an_oom():
    run = execute("import os; os.kill(os.getpid(), 9)")
    assert (run.result.outcome, run.result.exit_code, run.result.signal) == ("exited", 137, 9)
