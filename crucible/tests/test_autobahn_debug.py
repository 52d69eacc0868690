"""autobahn's per-connection debug message is pretty-printed only when debug messages are logged."""

from __future__ import annotations

import pprint

import pytest
import txaio

from crucible import autobahn_debug
from crucible.tests.web_process import printed_after_importing_the_application

OPTIONS = [(f"option{i}", i * 1000, "WebSocketServerFactory") for i in range(40)]  # what a connection copies


@pytest.fixture
def log_level():
    txaio.use_twisted()
    before = txaio.get_global_log_level()
    yield txaio.set_global_log_level
    txaio.set_global_log_level(before)


def test_at_the_usual_log_level_the_options_are_only_reprd(log_level):
    log_level("info")
    assert autobahn_debug.pformat_when_debugging(OPTIONS) == repr(OPTIONS)


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_when_debug_messages_are_logged_they_are_pretty_printed_as_before(log_level, level):
    log_level(level)
    assert autobahn_debug.pformat_when_debugging(OPTIONS) == pprint.pformat(OPTIONS)
    assert "\n" in pprint.pformat(OPTIONS)


def test_the_web_servers_process_installs_it():
    check = (
        "from autobahn.websocket import protocol; from crucible import autobahn_debug; "
        "print(protocol.pformat is autobahn_debug.pformat_when_debugging)"
    )
    assert printed_after_importing_the_application(check) == "True"
