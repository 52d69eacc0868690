"""The artifact collector: started in the sandbox after the program ended, to report what it left in /output.

Run as ``python3 -I -S -c SOURCE ROOT MAX_FILES MAX_BYTES``. It walks ROOT without following
anything: regular files only (``lstat``, then ``O_NOFOLLOW|O_NONBLOCK`` and ``fstat`` on the open
fd, so a symlink, fifo or device swapped in meanwhile is skipped, never followed or blocked on),
with bounded depth, entries, files and bytes. It writes the records ``streams.ArtifactStreamParser``
reads: ``F`` name_len(4) size(8) name data | ``S`` name_len(4) size(8) name (too big, left out) |
``L`` (a file left out for its name: longer than ``MAX_NAME_BYTES``) | ``T`` (more than the caps
allow) | ``E`` (end). It only reads; the host treats its output as hostile.
Standard library only (``-S``), nothing runs at import time.
"""

from __future__ import annotations

import os
import stat
import struct
import sys

RECORD_HEADER = struct.Struct(">IQ")  # name length, data length
MAX_ENTRIES = 100_000  # directory entries looked at, in all
MAX_DEPTH = 15  # directories below the root that are entered
MAX_NAME_BYTES = 255  # a relative path longer than this is left out (``streams.MAX_NAME_BYTES``, the same rule)
READ_CHUNK = 1 << 16


class _CapReached(Exception):
    """More entries or files than the caps allow: the list ends here, marked truncated."""


class Collector:
    """Walks one root; ``write(bytes)`` takes the records (stdout in the sandbox, a parser in tests).

    Imports only ``os``, ``stat``, ``struct`` and ``sys``: every import is paid on every run.
    """

    def __init__(self, root: bytes, max_files: int, max_bytes: int, write) -> None:
        self.root = root.rstrip(b"/")
        self.max_files, self.max_bytes = max_files, max_bytes
        self.write = write
        self.files = self.total_bytes = self.entries_seen = 0

    def run(self) -> None:
        """Write one record per file under the root (depth first, names sorted), then the end record."""
        stack = [(self.root, 0)]
        try:
            while stack:
                directory, depth = stack.pop()
                for entry in self.entries(directory):
                    self.visit(entry, depth, stack)
        except _CapReached:
            self.write(b"T")
        self.write(b"E")

    @staticmethod
    def entries(directory: bytes) -> list:
        try:
            with os.scandir(directory) as found:
                return sorted(found, key=lambda entry: entry.name)[:MAX_ENTRIES]
        except OSError:
            return []

    def visit(self, entry, depth: int, stack: list) -> None:
        self.entries_seen += 1
        if self.entries_seen > MAX_ENTRIES:
            raise _CapReached
        try:
            mode = os.lstat(entry.path).st_mode
        except OSError:
            return
        name = entry.path[len(self.root) + 1 :]
        if stat.S_ISDIR(mode):
            if depth < MAX_DEPTH:
                stack.append((entry.path, depth + 1))
            return
        if not stat.S_ISREG(mode):
            return
        if self.files >= self.max_files:
            raise _CapReached
        if len(name) > MAX_NAME_BYTES:
            self.write(b"L")
            return
        self.send(entry.path, name)

    def send(self, path: bytes, name: bytes) -> None:
        """One ``F`` record with the file's bytes, or an ``S`` record when it would pass the byte cap."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return
            size = info.st_size
            if size > self.max_bytes - self.total_bytes:
                self.write(b"S" + RECORD_HEADER.pack(len(name), size) + name)
                return
            self.write(b"F" + RECORD_HEADER.pack(len(name), size) + name)
            self.copy(fd, size)
            self.total_bytes += size
            self.files += 1
        finally:
            os.close(fd)

    def copy(self, fd: int, size: int) -> None:
        """Exactly ``size`` bytes of the file (zeros in place of what it lost after the fstat)."""
        left = size
        while left:
            chunk = os.read(fd, min(left, READ_CHUNK)) or bytes(min(left, READ_CHUNK))
            self.write(chunk)
            left -= len(chunk)


def write_stdout(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def argv(root: str, max_files: int, max_bytes: int) -> list[str]:
    """The collector's arguments (after ``-c SOURCE``)."""
    return [root, str(max_files), str(max_bytes)]


def main(args: list[str]) -> None:
    Collector(os.fsencode(args[0]), int(args[1]), int(args[2]), write_stdout).run()


if __name__ == "__main__":
    main(sys.argv[1:])
