"""Host-side parsers for bytes that come out of a sandbox. Everything parsed here is hostile.

- ``FrameDemuxer``: the Docker engine's multiplexed stream (8-byte frame headers) of a non-TTY
  exec, parsed incrementally with bounded buffers: a frame's payload is passed on as it arrives,
  never accumulated, and never split on newlines.
- ``ArtifactStreamParser``: the record stream written by the in-sandbox artifact collector,
  parsed incrementally with count, name and byte caps; file names are sanitised.
- ``TrailerWatch``: one output stream of a launched program, watched for the launcher's trailer
  (``helper.trailer_start``), which only a launcher that knows the run's nonce can write.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

STDOUT, STDERR = 1, 2


class ProtocolError(Exception):
    """The bytes do not follow the expected framing (treated as hostile or broken)."""


class FrameDemuxer:
    """Split the engine's ``[type, 0, 0, 0, size(4, big-endian)] payload`` frames into (stream, bytes) pieces.

    ``feed`` returns pieces no larger than the data fed in; memory held between calls is at most
    the 8 bytes of a partial header.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(data)
        while view:
            if self._remaining == 0:
                need = 8 - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) < 8:
                    break
                stream, size = self._header[0], struct.unpack(">I", self._header[4:8])[0]
                self._header.clear()
                if stream not in (0, STDOUT, STDERR):
                    raise ProtocolError(f"unknown stream type {stream}")
                self._stream = STDOUT if stream == 0 else stream
                self._remaining = size
                continue
            take = view[: self._remaining]
            view = view[len(take) :]
            self._remaining -= len(take)
            if pieces and pieces[-1][0] == self._stream:
                pieces[-1] = (self._stream, pieces[-1][1] + bytes(take))
            else:
                pieces.append((self._stream, bytes(take)))
        return pieces


@dataclass
class ParsedArtifact:
    """A file the program left in /output: its sanitised relative name, bytes, size and SHA-256."""

    name: str
    data: bytes
    size: int = 0
    sha256: str = ""

    def __post_init__(self) -> None:
        self.size = len(self.data)
        self.sha256 = hashlib.sha256(self.data).hexdigest()


# The artifact name rule, end to end: a file's path relative to /output is kept when it is at most
# MAX_NAME_BYTES bytes (as the program named it) and at most MAX_DEPTH parts; otherwise the file is
# skipped and counted (``skipped_names``). Sanitising never lengthens a name (one character per byte
# at most), so a kept name always fits ``Artifact.name`` (255 characters).
MAX_NAME_BYTES = 255
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 16
MAX_RECORD_NAME_BYTES = 1024  # a longer name length in a record header is a broken or hostile stream


def sanitize_name(raw: bytes) -> str | None:
    """A safe relative name for a file reported by the sandbox, or None when it must be refused.

    Refused: empty, absolute, any "." / ".." / empty component, longer than MAX_NAME_BYTES or deeper
    than MAX_DEPTH. Control characters (and backslashes) are replaced by "_", invalid UTF-8 by U+FFFD.
    """
    if not raw or len(raw) > MAX_NAME_BYTES or raw.startswith(b"/") or b"\0" in raw:
        return None
    parts = raw.split(b"/")
    if len(parts) > MAX_DEPTH:
        return None
    clean = []
    for part in parts:
        if part in (b"", b".", b"..") or len(part) > MAX_COMPONENT_BYTES:
            return None
        text = part.decode("utf-8", errors="replace")
        text = "".join("_" if (ord(ch) < 32 or 127 <= ord(ch) < 160 or ch == "\\") else ch for ch in text)
        if text in (".", ".."):
            return None
        clean.append(text)
    return "/".join(clean)


@dataclass
class ArtifactStreamParser:
    """Records: ``F`` name_len(4) data_len(8) name data | ``S`` name_len(4) size(8) name (skipped, too big)
    | ``L`` (skipped, name too long) | ``T`` (too many files) | ``E`` (end). Anything else ends parsing
    as truncated. ``skipped_names`` counts the files left out by the name rule (see MAX_NAME_BYTES).
    """

    max_files: int
    max_bytes: int
    artifacts: list[ParsedArtifact] = field(default_factory=list)
    truncated: bool = False
    skipped_names: int = 0
    done: bool = False
    failed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _state: str = "type"
    _kind: bytes = b""
    _name_len: int = 0
    _data_len: int = 0
    _name: bytes = b""
    _total: int = 0
    _names: set = field(default_factory=set)

    def feed(self, data: bytes) -> None:
        if self.done or self.failed:
            return
        self._buffer += data
        try:
            self._parse()
        except ProtocolError:
            self.failed = True
            self.truncated = True
            self._buffer.clear()

    def finish(self) -> None:
        """The stream ended: anything but a clean end record means the list may be incomplete."""
        if not self.done:
            self.truncated = True
        self._buffer.clear()

    def _take(self, n: int) -> bytes | None:
        if len(self._buffer) < n:
            return None
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    def _parse(self) -> None:
        """Consume whole fields from the buffer, one state at a time, until one is incomplete."""
        steps = {"type": self._record_type, "header": self._header, "name": self._name_field, "data": self._data}
        while not self.done and steps[self._state]():
            pass

    def _record_type(self) -> bool:
        kind = self._take(1)
        if kind is None:
            return False
        if kind == b"E":
            self.done = True
            self._buffer.clear()
        elif kind == b"T":
            self.truncated = True
        elif kind == b"L":
            self.truncated = True
            self.skipped_names += 1
        elif kind in (b"F", b"S"):
            self._kind, self._state = kind, "header"
        else:
            raise ProtocolError("unknown record")
        return True

    def _header(self) -> bool:
        header = self._take(12)
        if header is None:
            return False
        self._name_len, self._data_len = struct.unpack(">IQ", header)
        if self._name_len == 0 or self._name_len > MAX_RECORD_NAME_BYTES:
            raise ProtocolError("bad name length")
        over_caps = self._data_len > self.max_bytes - self._total or len(self.artifacts) >= self.max_files
        if self._kind == b"F" and over_caps:
            raise ProtocolError("over the artifact caps")
        self._state = "name"
        return True

    def _name_field(self) -> bool:
        name = self._take(self._name_len)
        if name is None:
            return False
        self._name = name
        if self._kind == b"S":  # a file left out for its size: the list is incomplete
            self.truncated = True
            self._state = "type"
        else:
            self._state = "data"
        return True

    def _data(self) -> bool:
        data = self._take(self._data_len)
        if data is None:
            return False
        self._total += len(data)
        self._state = "type"
        clean = sanitize_name(self._name)
        if clean is None:
            self.truncated = True
            self.skipped_names += 1
        elif clean in self._names:
            self.truncated = True
        else:
            self._names.add(clean)
            self.artifacts.append(ParsedArtifact(name=clean, data=data))
        return True


MAX_TRAILER_REST = 24  # "STATUS:empty|files" and its NUL; a longer one is broken


@dataclass(frozen=True)
class Trailer:
    """What the launcher's trailer says: the program's exit status (shell style) and whether /output is empty."""

    exit_code: int
    output_empty: bool


def _held_back(data: bytes, start: bytes) -> int:
    """The length of the longest suffix of ``data`` that begins ``start`` (``start`` is not in ``data``)."""
    at = data.find(start[:1], max(0, len(data) - len(start) + 1))
    while at >= 0:
        if start.startswith(data[at:]):
            return len(data) - at
        at = data.find(start[:1], at + 1)
    return 0


def _parse_trailer_rest(rest: bytes) -> Trailer | None:
    status, _, word = rest.partition(b":")
    if not (status.isdigit() and len(status) <= 3 and word in (b"empty", b"files")):
        return None
    return Trailer(int(status), word == b"empty")


@dataclass
class TrailerWatch:
    """One stream of a program after the launcher's marker: what passes is the program's, at once, but
    for the longest end of it that could begin the trailer (``start``: its fixed part, the run's nonce
    included), held until the next piece tells. Once the whole ``start`` has come, the rest of the
    trailer follows; the stream has ``ended`` and anything after it (from what the program left
    running) is nobody's. Bytes that look like a trailer without the nonce are the program's."""

    start: bytes
    held: bytes = b""
    rest: bytearray | None = None  # after ``start``, until its NUL
    ended: bool = False
    trailer: Trailer | None = None  # None once ended: a broken trailer (never taken for a good one)

    def feed(self, data: bytes) -> bytes:
        """The program's part of ``data``."""
        if self.ended:
            return b""
        if self.rest is not None:
            self._read_rest(data)
            return b""
        data = self.held + data
        at = data.find(self.start)
        if at >= 0:
            self.held, self.rest = b"", bytearray()
            self._read_rest(data[at + len(self.start) :])
            return data[:at]
        keep = _held_back(data, self.start)
        self.held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def release(self) -> bytes:
        """What is still held back, once no trailer will come: the program's too."""
        held, self.held = self.held, b""
        return held

    def _read_rest(self, data: bytes) -> None:
        self.rest += data[: MAX_TRAILER_REST + 1 - len(self.rest)]
        end = self.rest.find(b"\x00")
        if end >= 0:
            self.ended, self.trailer = True, _parse_trailer_rest(bytes(self.rest[:end]))
        elif len(self.rest) > MAX_TRAILER_REST:
            self.ended = True
