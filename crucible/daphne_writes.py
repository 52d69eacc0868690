"""The web server (Daphne, on Twisted) sends what it writes at once when nothing waits to be sent.

Twisted's ``FileDescriptor.write`` only buffers: it registers the socket as a writer with the event
loop, whose next turn sends the data and unregisters the socket. Every WebSocket frame cost an
``epoll_ctl`` to add the writer, a turn of the loop, the ``send`` and an ``epoll_ctl`` to remove it:
with a thousand viewers, the largest share of Daphne's time per line delivered (README, Benchmarks).
asyncio's own transports send at once and wait for the socket only for what it did not take; this
does the same for Twisted's TCP connections. The order of bytes is kept: it sends at once only when
nothing is buffered, and whatever the socket did not take is buffered as before (then the writer is
registered as before). A connection that is closing, or a TLS one, writes as Twisted does.
"""

from __future__ import annotations

from twisted.internet import tcp

_buffered_write = tcp.Connection.write


def write_now(self: tcp.Connection, data: bytes) -> None:
    if (
        data
        and isinstance(data, bytes)
        and not self.TLS
        and self.connected
        and not self.disconnecting
        and not self._writeDisconnecting
        and not self._writeDisconnected
        and not self._tempDataLen
        and self.offset == len(self.dataBuffer)
    ):
        sent = self.writeSomeData(data)  # at most SEND_LIMIT bytes; 0 when the socket is full
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
        # An error (the connection is lost) is found again, and handled, by the buffered write's turn.
    _buffered_write(self, data)


def install() -> None:
    """Make every TCP connection of this process write at once (the web server's process only)."""
    tcp.Connection.write = write_now
