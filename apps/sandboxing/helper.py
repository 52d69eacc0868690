"""The host's side of the in-sandbox helper (``sandbox/helper/crucible-helper.c``): argv and payloads.

Every image the project builds carries one small static binary at ``HELPER_PATH`` (root-owned, mode
0755, on the read-only root), so a runtime image needs neither python3 nor a shell. The host starts
it by exec with a subcommand, never through a shell, with nothing a user wrote in its own argv:

- ``idle``: the container's main process (SIGTERM, SIGINT and SIGHUP ignored, waits forever);
- ``term-all``: SIGTERM to every process of the sandbox user but the idle one (a cancel);
- ``launch``: delivers one program (``launch_argv``, ``pack_payload``): it forks, its child writes the
  files, writes ``MARKER`` (``execution.MARKER``) to stderr then stdout and execs the program; what
  it writes to stderr before the marker is its own complaint. The parent (non-dumpable, SIGTERM,
  SIGINT and SIGHUP ignored, no stdin) waits for the program and then, if the marker was written,
  writes the trailer (``trailer_start``) to stdout and to stderr and exits with the program's exit
  status: how it ended and whether the output directory it was given holds anything, with the
  run's nonce (``NONCE_BYTES`` random bytes, ``pack_payload``), which only the host
  and that parent know (it travels in the payload, never in argv or the environment), so a program
  cannot forge one. No trailer (the program killed the parent, the sandbox was killed, the helper
  could not fork): the host learns all that the old way (exec inspect, the collector);
- ``collect``: the records of the files in /output (``collect_argv``; ``streams.ArtifactStreamParser``
  reads them);
- ``reap``: SIGKILL what a program left behind; ``reap reset DIR...`` also empties every writable
  place and verifies the sandbox is clean (exit 0, else 2 with the reason on stderr);
- ``serve``: one exec for every program of a reused sandbox (``SERVE_COMMAND``): it reads frames on
  its stdin. ``launch_frame`` runs one program exactly as ``launch`` does (its child is launch's
  child; the serve process is launch's parent and, once the program has ended, SIGKILLs whatever
  it left (no trailer when something survives), writes the same trailer and reads on);
  ``reset_frame`` does what ``reap reset`` does (the serve process spared) and replies
  ``reset_reply(nonce)`` + "ok" or the reason, then a NUL, on stdout and then stderr; right after an
  "ok", a ``Prestart.frame`` starts the next program's interpreter ahead (Python's: it does its start-up
  and waits for the program's L frame, on which serve writes the files and the marker and lets it go;
  an L frame for another program kills it and starts that one as usual). It is
  non-dumpable and ignores SIGTERM, SIGINT, SIGHUP and SIGPIPE, and it holds each nonce only in
  its memory (the frames travel on its stdin, which no program shares), so a program can neither
  read the next program's nonce nor forge its trailer or the reset's reply; it can kill the serve
  process (the same user): the stream then ends, and the host discards the sandbox;
- ``await``: the main process of a fresh sandbox whose one program comes over ``attach`` instead of
  an exec (``AWAIT_COMMAND``, ``policy.container_config(attachable=True)``): it reads one
  ``launch_frame`` from the container's stdin and runs it as serve does, writes the trailer, and
  exits with the program's status once the host has closed the stream (after reading the counters
  and, with "files", collecting /output by exec): the container then stops by itself. It writes
  nothing before the frame, so nothing is lost before the host attaches. Its program can kill it
  (the same user): the container stops, the stream ends without a trailer.

Its output is parsed as hostile: the sandbox's programs may have replaced anything it could see.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings

HELPER_PATH = "/usr/local/libexec/crucible-helper"
SOURCE_PATH = Path(settings.BASE_DIR) / "sandbox" / "helper" / "crucible-helper.c"
COMPILE_FLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror", "-s")
# serve's interpreter started ahead (``Prestart``): the hook an image with Debian's python3 carries in
# PRESTART_DIR (``sandbox/prestart``), which makes an interpreter started with PRESTART_OPTION wait.
PRESTART_DIR = "/usr/lib/python3/dist-packages"
PRESTART_FILES = tuple(
    Path(settings.BASE_DIR) / "sandbox" / "prestart" / name
    for name in ("crucible_prestart.py", "crucible-prestart.pth")
)
PRESTART_OPTION = ("-X", "crucible_prestart")
# The name (``/proc/PID/comm``) of every helper process, the idle main process among them.
PROCESS_NAME = "crucible-helper"

# launch: the payload on its stdin, and how it exits when it cannot start the program.
NONCE_BYTES = 16
# seccomp filter length, code length, stdin length, extra files length, the run's nonce
HEADER = struct.Struct(f">IIII{NONCE_BYTES}s")
FILE_HEADER = struct.Struct(">HI")  # one extra file: name length, content length
EXIT_PAYLOAD_SHORT = 125
EXIT_NO_FILTER = 126
EXIT_CANNOT_RUN = 127

# collect: the caps it enforces itself (the host enforces its own on what it reads).
RECORD_HEADER = struct.Struct(">IQ")  # name length, data length
MAX_ENTRIES = 100_000  # directory entries looked at, in all
MAX_DEPTH = 15  # directories below the root that are entered
MAX_NAME_BYTES = 255  # a relative path longer than this is left out (``streams.MAX_NAME_BYTES``, the same rule)


def argv(subcommand: str, *args: str) -> list[str]:
    """The exec argv that runs the helper's ``subcommand`` with ``args`` in a sandbox."""
    return [HELPER_PATH, subcommand, *args]


IDLE_COMMAND = argv("idle")
AWAIT_COMMAND = argv("await")
TERM_ALL_COMMAND = argv("term-all")
SERVE_COMMAND = argv("serve")


# launch's trailer: TRAILER_START, the nonce in hex, b":", then "STATUS:empty|files" and a NUL.
TRAILER_START = b"\x00crucible:end:"
TRAILER_EMPTY = "empty"
TRAILER_FILES = "files"


def launch_argv(
    code_path: str, marker: bytes, environment: dict[str, str], command: list[str], output_dir: str
) -> list[str]:
    """Deliver a program: its code goes to ``code_path`` (a directory alone, ending in ``/``: the run
    of a compiled program, whose files are there), then ``command`` runs with exactly ``environment``;
    the trailer says whether ``output_dir`` holds anything once it has ended."""
    pairs = [f"{key}={value}" for key, value in environment.items()]
    return argv("launch", code_path, marker.hex(), output_dir, str(len(pairs)), *pairs, *command)


def pack_payload(
    code: bytes,
    stdin: bytes,
    seccomp_filter: bytes = b"",
    files: dict[str, bytes] | None = None,
    *,
    nonce: bytes,
) -> bytes:
    """What the host writes to the launcher's stdin. ``files`` (plain names, checked by the host) go
    next to the code file; ``nonce`` (``NONCE_BYTES`` random bytes) is what the trailer must carry."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
    extra = b"".join(
        FILE_HEADER.pack(len(name.encode()), len(content)) + name.encode() + content
        for name, content in (files or {}).items()
    )
    header = HEADER.pack(len(seccomp_filter), len(code), len(stdin), len(extra), nonce)
    return header + seccomp_filter + code + stdin + extra


def trailer_start(nonce: bytes) -> bytes:
    """What every trailer of the launch given ``nonce`` starts with; the rest is "STATUS:empty|files\\0"."""
    return TRAILER_START + nonce.hex().encode() + b":"


# serve's frames: kind (b"L", b"R" or b"P"), body length; an L body starts with its fields' length.
FRAME_HEADER = struct.Struct(">cI")
FIELDS_LENGTH = struct.Struct(">I")
RESET_REPLY_START = b"\x00crucible:reset:"
RESET_OK = b"ok"
MAX_RESET_REPLY = 2200  # the whole reply, at most (the helper's buffer)


def launch_frame(workdir: str, launch: list[str], payload: bytes) -> bytes:
    """The serve frame that runs the program ``launch`` (a ``launch_argv``) would, from ``workdir``."""
    fields = _strings((workdir, *launch[2:]))
    body = FIELDS_LENGTH.pack(len(fields)) + fields + payload
    return FRAME_HEADER.pack(b"L", len(body)) + body


def _strings(parts) -> bytes:
    return b"".join(part.encode() + b"\x00" for part in parts)


@dataclass(frozen=True)
class Prestart:
    """An interpreter for serve to start ahead of the next program, after a clean reset (``frame``): the
    program that ``launch`` (a ``launch_argv`` with an empty marker: never a nonce) runs from ``workdir``
    under ``seccomp_filter``, started as ``command`` (``prestart_command``). Serve uses it only for an L
    frame with exactly these (the marker aside), else kills it; each one for one program at most."""

    workdir: str
    launch: tuple[str, ...]
    command: tuple[str, ...]
    seccomp_filter: bytes

    def frame(self) -> bytes:
        fields, argv = _strings((self.workdir, *self.launch[2:])), _strings(self.command)
        body = FIELDS_LENGTH.pack(len(fields)) + fields + FIELDS_LENGTH.pack(len(argv)) + argv + self.seccomp_filter
        return FRAME_HEADER.pack(b"P", len(body)) + body


def prestart_command(command: list[str], code_path: str) -> tuple[str, ...] | None:
    """How to start ``command``'s interpreter ahead, when it is Python's (``python3 -u CODE_PATH ARGS``:
    ``PRESTART_OPTION`` added, which the image's ``sandbox/prestart`` hook waits on); None otherwise."""
    if command[:3] == ["python3", "-u", code_path]:
        return (command[0], *PRESTART_OPTION, *command[1:])
    return None


def reset_frame(nonce: bytes, directories: tuple[str, ...]) -> bytes:
    """The serve frame that resets the sandbox (as ``reset_argv(directories)``), answered with ``nonce``."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce is {NONCE_BYTES} bytes")
    body = nonce + b"".join(directory.encode() + b"\x00" for directory in directories)
    return FRAME_HEADER.pack(b"R", len(body)) + body


def reset_reply(nonce: bytes) -> bytes:
    """What serve's reply to the reset given ``nonce`` starts with; "ok" or the reason and a NUL follow."""
    return RESET_REPLY_START + nonce.hex().encode() + b":"


def collect_argv(root: str, max_files: int, max_bytes: int) -> list[str]:
    """Report the regular files under ``root`` within ``max_files`` and ``max_bytes``."""
    return argv("collect", root, str(max_files), str(max_bytes))


def reap_argv() -> list[str]:
    return argv("reap")


def reset_argv(directories: tuple[str, ...]) -> list[str]:
    return argv("reap", "reset", *directories)


@cache
def digest() -> str:
    """A short hash of the helper's source and compile flags and of the prestart hook: part of every
    image's recipe, and the label (``image.HELPER_LABEL``) that tells an image with this helper (and
    hook) from an older one."""
    made_of = SOURCE_PATH.read_bytes() + repr(COMPILE_FLAGS).encode()
    made_of += b"".join(path.name.encode() + b"\x00" + path.read_bytes() for path in PRESTART_FILES)
    return hashlib.sha256(made_of).hexdigest()[:12]
