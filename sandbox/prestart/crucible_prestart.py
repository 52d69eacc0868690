"""The Python interpreter a reused sandbox starts ahead of its next program (the helper's serve, P frame).

Every image carries this file next to ``crucible-prestart.pth`` in ``/usr/lib/python3/dist-packages``;
the .pth line calls ``start`` only in an interpreter started with ``-X crucible_prestart`` (the helper
starts ``python3 -X crucible_prestart -u FILE ARGS...``; a program's own ``python3`` never is). Site
runs it during the interpreter's start-up, before python3 opens FILE: it blocks on fd 0, a pipe from the
serve process, until the go (``f`` and the stdin file's path, or ``n`` for none, then a NUL), which comes
once FILE is written; it makes fd 0 the program's stdin (that file opened, then unlinked, as the launcher
does; or /dev/null), rebuilds ``sys.stdin`` on it as start-up builds it, and leaves no trace of itself:
the option gone from ``sys._xoptions`` and ``sys.orig_argv``, the module gone from ``sys.modules``. Then
start-up goes on as for ``python3 -u FILE ARGS...``: the interpreter runs FILE as ``__main__``, with the
argv, ``__file__``, ``sys.path[0]``, tracebacks, signals and exit status of a plain run.

Nothing here is secret (the go carries only a path); the program runs in this process after it.
"""

import io
import os
import sys

XOPTION = "crucible_prestart"
GO_MAX = 4200  # the go, at most: a kind byte, a path (PATH_MAX) and a NUL
EXIT_CANNOT_RUN = 127  # the helper's: the program could not be started


def start() -> None:
    """Wait for the go, then hand the interpreter over to the program (see the module's docstring)."""
    kind, path = wait_for_the_go()
    try:
        take_stdin(kind, path)
    except OSError as exc:
        os.write(2, f"crucible-launcher: cannot set up the program's stdin: {exc.strerror}\n".encode())
        os._exit(EXIT_CANNOT_RUN)
    sys.stdin = sys.__stdin__ = reopened_stdin(sys.stdin)
    forget_itself()
    # Its functions and their globals go with this call (no cycle left for a program to find in gc).
    globals().clear()


def wait_for_the_go(fd: int = 0) -> tuple[bytes, bytes]:
    """(kind, path) of the go read from ``fd``; when the serve process goes away first (its end of the
    pipe closes) there is no program: exit quietly."""
    message = b""
    while not message.endswith(b"\x00"):
        piece = os.read(fd, GO_MAX)
        if not piece or len(message) + len(piece) > GO_MAX:
            os._exit(0)
        message += piece
    kind, path = message[:1], message[1:-1]
    if kind not in (b"f", b"n") or (kind == b"f") != bool(path) or b"\x00" in path:
        os._exit(EXIT_CANNOT_RUN)
    return kind, path


def take_stdin(kind: bytes, path: bytes) -> None:
    """fd 0 (inheritable, as the launcher leaves it) becomes the program's stdin."""
    if kind == b"f":
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.unlink(path)
    else:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(fd, 0)
    os.close(fd)


def reopened_stdin(old: io.TextIOWrapper) -> io.TextIOWrapper:
    """A ``sys.stdin`` on the new fd 0 built as start-up builds one (CPython's ``create_stdio``), with
    the old one's settings: the old one had looked at the pipe (``seekable`` is cached)."""
    buffer = io.open(0, "rb", buffering=-1, closefd=False)  # noqa: UP020 (create_stdio calls io.open)
    buffer.raw.name = "<stdin>"
    stream = io.TextIOWrapper(
        buffer,
        encoding=old.encoding,
        errors=old.errors,
        newline="\n",
        line_buffering=old.line_buffering,
        write_through=old.write_through,
    )
    stream.mode = "r"
    return stream


def forget_itself() -> None:
    """Nothing of the start-up ahead stays where a program could tell it from a plain run's."""
    sys._xoptions.pop(XOPTION, None)
    argv = sys.orig_argv
    for at in range(len(argv) - 1):
        if argv[at] == "-X" and argv[at + 1] == XOPTION:
            del argv[at : at + 2]
            break
    sys.modules.pop(__name__, None)
    sys.path_importer_cache.pop(os.path.dirname(__file__), None)
