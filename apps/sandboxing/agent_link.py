"""The host's end of a session's agent (``incontainer/agent.py``): one exec kept open for the life of
the session, requests written to its stdin, replies read from its stdout by one thread.

Several requests may be in flight at once; each waits for the reply with its id. What the agent
sends is parsed as hostile (a program of the session can write to the agent's stdout): a header
is at most ``MAX_REPLY_HEADER`` bytes of JSON object, each blob at most what the request allowed,
and anything else breaks the link. A broken link (the agent was killed from inside, or spoke
nonsense) fails the requests in flight with ``AgentLost``; ``AgentLink.request`` starts a new
agent for the next one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import socket
import struct
import threading
from dataclasses import dataclass, field

from apps.sandboxing import seccomp_bpf
from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.incontainer import python_argv
from apps.sandboxing.incontainer.agent import encode_frame
from apps.sandboxing.policy import ENVIRONMENT, SANDBOX_USER
from apps.sandboxing.streams import STDERR, STDOUT, FrameDemuxer, ProtocolError

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
MAX_REPLY_HEADER = 64 * 1024
READY_TIMEOUT_S = 30.0
RECV_SIZE = 256 * 1024
STDERR_KEPT = 4096


class AgentLost(Exception):
    """The agent went away (or broke the protocol) before it replied."""


@dataclass
class Pending:
    blob_limit: int
    done: threading.Event = field(default_factory=threading.Event)
    header: dict | None = None
    blobs: list[bytes] = field(default_factory=list)
    lost: str = ""
    abandoned: bool = False


class ReplyParser:
    """Frames out of the agent's stdout bytes, bounded by what each pending request allows."""

    def __init__(self, limit_of) -> None:
        self.buffer = bytearray()
        self.limit_of = limit_of  # reply id -> the largest total of blobs it may carry
        self.header: dict | None = None

    def feed(self, data: bytes) -> list[tuple[dict, list[bytes]]]:
        self.buffer += data
        frames = []
        while True:
            if self.header is None:
                if len(self.buffer) < HEADER.size:
                    break
                (size,) = HEADER.unpack(self.buffer[: HEADER.size])
                if size > MAX_REPLY_HEADER:
                    raise ProtocolError("agent reply header too large")
                if len(self.buffer) < HEADER.size + size:
                    break
                try:
                    header = json.loads(bytes(self.buffer[HEADER.size : HEADER.size + size]))
                except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
                    raise ProtocolError("agent reply header is not JSON")
                lengths = header.get("blobs", []) if isinstance(header, dict) else None
                if (
                    not isinstance(header, dict)
                    or not isinstance(header.get("id"), int)
                    or not isinstance(lengths, list)
                    or not all(isinstance(n, int) and n >= 0 for n in lengths)
                    or sum(lengths) > self.limit_of(header["id"])
                ):
                    raise ProtocolError("agent reply header is malformed")
                del self.buffer[: HEADER.size + size]
                self.header = header
            need = sum(self.header["blobs"])
            if len(self.buffer) < need:
                break
            blobs, offset = [], 0
            for length in self.header["blobs"]:
                blobs.append(bytes(self.buffer[offset : offset + length]))
                offset += length
            del self.buffer[:need]
            frames.append((self.header, blobs))
            self.header = None
        return frames


class AgentLink:
    """A session's agent: ``request(header, blobs, timeout_s, blob_limit)`` -> (reply header, blobs)."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.lock = threading.Lock()  # guards the connection, ids and the pending table (held briefly)
        self.connect_lock = threading.Lock()  # one agent started at a time
        self.write_lock = threading.Lock()
        self.pending: dict[int, Pending] = {}
        self.next_id = 1
        self.raw: socket.socket | None = None
        self.sock = None
        self.generation = 0
        self.stderr_tail = b""

    # --- connection --------------------------------------------------------------------------
    def _connect(self) -> None:
        """Start an agent in the sandbox and wait for its hello (called with ``connect_lock`` held)."""
        api = self.sandbox.api
        exec_id = api.exec_create(
            self.sandbox.container_id,
            python_argv("agent"),
            stdin=True,
            stdout=True,
            stderr=True,
            user=SANDBOX_USER,
            workdir="/",
            environment=dict(ENVIRONMENT),
        )["Id"]
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        raw.setblocking(True)
        raw.settimeout(None)
        hello = Pending(blob_limit=0)
        with self.lock:
            self.sock, self.raw = sock, raw
            self.generation += 1
            generation = self.generation
            self.pending[0] = hello
        # With the caller's context (its log fields: the session's id) on the reader's lines too.
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._read_replies, raw, generation),
            name="agent-reader",
            daemon=True,
        ).start()
        if not hello.done.wait(READY_TIMEOUT_S) or hello.lost or not (hello.header or {}).get("ready"):
            why = hello.lost or "no hello"
            with self.lock:
                self._close_locked()
            raise AgentLost(f"the session agent did not start: {why}")
        # Under gVisor the engine does not put exec'd processes under the seccomp profile: the agent
        # installs it on itself first (``confine``), and every command inherits it.
        if is_gvisor(self.sandbox.profile.engine_runtime):
            reply, _ = self._send_and_wait({"op": "confine"}, [seccomp_bpf.program()], READY_TIMEOUT_S, 0)
            if reply.get("error"):
                with self.lock:
                    self._close_locked()
                raise AgentLost(f"the session agent could not install the seccomp profile: {reply.get('message')}")

    def _close_locked(self) -> None:
        if self.raw is not None:
            for action in (lambda: self.raw.shutdown(socket.SHUT_RDWR), self.raw.close, self.sock.close):
                try:
                    action()
                except Exception as exc:
                    log.debug("closing an agent link: %s", exc)
        self.raw = self.sock = None

    def close(self) -> None:
        with self.lock:
            self._close_locked()
            self._fail_all("the session ended")

    def _fail_all(self, why: str) -> None:
        for pending in self.pending.values():
            pending.lost = why
            pending.done.set()
        self.pending.clear()

    def _read_replies(self, raw: socket.socket, generation: int) -> None:
        demux = FrameDemuxer()
        parser = ReplyParser(self._blob_limit)
        why = "the session agent exited"
        try:
            while True:
                data = raw.recv(RECV_SIZE)
                if not data:
                    break
                for stream, piece in demux.feed(data):
                    if stream == STDERR:
                        self.stderr_tail = (self.stderr_tail + piece)[-STDERR_KEPT:]
                    elif stream == STDOUT:
                        for header, blobs in parser.feed(piece):
                            self._deliver(header, blobs)
        except ProtocolError as exc:
            why = f"the session agent broke the protocol: {exc}"
        except OSError:
            pass
        except Exception as exc:  # whatever it was, the link is not to be trusted any more
            log.warning("session agent reader failed", exc_info=True)
            why = f"the session agent's reply could not be read: {type(exc).__name__}"
        with self.lock:
            if self.generation == generation:
                if self.stderr_tail:
                    log.info("session agent stderr: %s", self.stderr_tail.decode("utf-8", "replace")[-500:])
                self._close_locked()
                self._fail_all(why)

    def _blob_limit(self, reply_id: int) -> int:
        pending = self.pending.get(reply_id)
        if pending is None:
            raise ProtocolError(f"a reply to no request ({reply_id})")
        return pending.blob_limit

    def _deliver(self, header: dict, blobs: list[bytes]) -> None:
        pending = self.pending.pop(header["id"], None)  # atomic; the waiter holds no lock
        if pending is None:
            raise ProtocolError("a second reply to one request")
        if pending.abandoned:
            return  # its requester gave up waiting; the agent answered late, which is no fault
        pending.header, pending.blobs = header, blobs
        pending.done.set()

    # --- requests ----------------------------------------------------------------------------
    def request(self, header: dict, blobs: list[bytes], *, timeout_s: float, blob_limit: int):
        """Send one request and wait up to ``timeout_s`` for its reply; raises ``AgentLost``."""
        with self.connect_lock:
            if self.raw is None:
                self._connect()
        return self._send_and_wait(header, blobs, timeout_s, blob_limit)

    def _send_and_wait(self, header: dict, blobs: list[bytes], timeout_s: float, blob_limit: int):
        with self.lock:
            if self.raw is None:
                raise AgentLost("the session agent went away")
            request_id = self.next_id
            self.next_id += 1
            pending = Pending(blob_limit=blob_limit)
            self.pending[request_id] = pending
            raw = self.raw
        try:
            with self.write_lock:
                raw.sendall(encode_frame({**header, "id": request_id}, blobs))
        except OSError as exc:
            with self.lock:
                self.pending.pop(request_id, None)
            raise AgentLost(f"cannot reach the session agent: {exc}")
        if not pending.done.wait(timeout_s):
            # Left in the table, marked: a late reply is then dropped, not taken for a forged one.
            pending.abandoned = True
            raise AgentLost("the session agent did not answer in time")
        if pending.lost:
            raise AgentLost(pending.lost)
        return pending.header, pending.blobs
