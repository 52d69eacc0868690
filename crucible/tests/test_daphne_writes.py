"""The web server's TCP connections send at once what they write when nothing waits to be sent, and
buffer (registering the socket with the event loop, as Twisted does) only what the socket did not take."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from crucible import daphne_writes
from crucible.tests.web_process import printed_after_importing_the_application


class Reactor:
    """Records what the connection asks of the event loop (the rest of Twisted's reactor is not used)."""

    def __init__(self):
        self.writers: list = []

    def addWriter(self, writer):  # noqa: N802 (Twisted's name)
        if writer not in self.writers:  # as the reactor: a writer is registered once
            self.writers.append(writer)

    def removeWriter(self, writer):  # noqa: N802
        if writer in self.writers:
            self.writers.remove(writer)

    def addReader(self, reader):  # noqa: N802
        pass

    def removeReader(self, reader):  # noqa: N802
        pass

    def callLater(self, *args, **kwargs):  # noqa: N802
        raise AssertionError("not expected")


@pytest.fixture
def connection(monkeypatch):
    monkeypatch.setattr(tcp.Connection, "write", daphne_writes.write_now)
    ours, theirs = socket.socketpair()
    reactor = Reactor()
    conn = tcp.Connection(ours, Protocol(), reactor=reactor)
    conn.connected = True
    theirs.settimeout(5)
    yield conn, theirs, reactor
    ours.close()
    theirs.close()


def read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_a_frame_written_on_an_idle_connection_is_sent_at_once_without_waiting_for_the_event_loop(connection):
    conn, peer, reactor = connection
    conn.write(b"frame 1")
    conn.write(b"frame 2")
    assert read(peer, 14) == b"frame 1frame 2"
    assert reactor.writers == []  # no writer registered, nothing buffered


def test_what_the_socket_does_not_take_is_buffered_and_sent_in_order_by_the_event_loop(connection):
    conn, peer, reactor = connection
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than a socket buffer takes at once
    conn.write(big)
    conn.write(b"after")  # behind the buffered rest, never ahead of it
    assert reactor.writers == [conn]
    received = b""
    while len(received) < len(big) + 5:
        if reactor.writers:
            assert conn.doWrite() is None  # the event loop's turn: the socket is writable
        received += peer.recv(1 << 20)
    assert received == big + b"after"
    assert reactor.writers == []  # all sent: the writer is removed


def test_a_connection_that_is_closing_writes_as_twisted_does(connection):
    conn, peer, reactor = connection
    conn.disconnecting = True
    conn.write(b"last words")
    assert reactor.writers == [conn]
    conn.disconnecting = False
    assert conn.doWrite() is None
    assert read(peer, 10) == b"last words"


def test_the_web_servers_process_installs_it_and_a_process_that_only_imports_the_application_does_not():
    check = (
        "from twisted.internet import tcp; from crucible import daphne_writes; "
        "print(tcp.Connection.write is daphne_writes.write_now)"
    )
    assert printed_after_importing_the_application(check) == "True"
    import crucible.asgi  # noqa: F401  (this test process read its settings first)

    assert tcp.Connection.write is not daphne_writes.write_now
