"""autobahn formats a debug message on every WebSocket connection, whether debug logging is on or not.

``WebSocketProtocol._connectionMade`` pretty-prints the forty-odd options each connection copies
from its factory (``pprint.pformat``) for a ``log.debug`` that is dropped unless txaio logs at
debug level: about half a millisecond of the web server's CPU per connection, 6% of Daphne's
work while a thousand viewers connected (README, Benchmarks). In the web server's process the
module's ``pformat`` pretty-prints only when txaio logs at debug (or trace) level; otherwise it
gives the same value's ``repr``, which costs a tenth of that.
"""

from __future__ import annotations

import pprint

import txaio
from autobahn.websocket import protocol

DEBUG_LEVELS = ("debug", "trace")


def pformat_when_debugging(value, *args, **kwargs) -> str:
    if txaio.get_global_log_level() in DEBUG_LEVELS:
        return pprint.pformat(value, *args, **kwargs)
    return repr(value)


def install() -> None:
    """For autobahn's WebSocket protocol in this process (the web server's only)."""
    protocol.pformat = pformat_when_debugging
