"""The launcher: started in the sandbox, as the sandbox user, to hand one program its code and stdin.

Run as ``python3 -I -S -c SOURCE CODE_PATH MARKER_HEX N KEY=VALUE*N ARGV...`` (see ``argv``). It
reads a length-prefixed payload (``pack_payload``: a seccomp filter, the code, the program's stdin,
then any extra files of a submission with several) from its own stdin, writes the extra files and
the code file read-only next to each other (no code file when CODE_PATH names a directory alone,
ending in ``/``: the run step of a compiled program, whose files the compile step received), makes
fd 0 the stdin bytes (or ``/dev/null``), installs the filter if there is one (BPF from the host,
with no-new-privileges; the host sends one where the engine does not filter exec'd programs
itself, i.e. under gVisor), writes the marker to stderr and stdout and ``execve``s the runtime
command with exactly the given environment. Whatever it writes to stderr before the marker is its
own complaint, not the program's: the host reads the marker on each stream to tell the two apart.
Standard library only
(``-S``), nothing runs at import time.
"""

from __future__ import annotations

import os
import struct
import sys

HEADER = struct.Struct(">IIII")  # seccomp filter length, code length, stdin length, extra files length
FILE_HEADER = struct.Struct(">HI")  # one extra file: name length, content length
READ_CHUNK = 1 << 20
EXIT_PAYLOAD_SHORT = 125
EXIT_CANNOT_RUN = 127
EXIT_NO_FILTER = 126
BPF_INSTRUCTION_BYTES = 8
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
STDIN_FILE = ".stdin"  # next to the code file; not a valid runtime file name, so never the code's


def pack_payload(
    code: bytes, stdin: bytes, seccomp_filter: bytes = b"", files: dict[str, bytes] | None = None
) -> bytes:
    """What the host writes to the launcher's stdin. ``files`` (plain names, checked by the host) go
    next to the code file."""
    extra = b"".join(
        FILE_HEADER.pack(len(name.encode()), len(content)) + name.encode() + content
        for name, content in (files or {}).items()
    )
    header = HEADER.pack(len(seccomp_filter), len(code), len(stdin), len(extra))
    return header + seccomp_filter + code + stdin + extra


def unpack_files(blob: bytes) -> list[tuple[str, bytes]]:
    """The extra files of a payload, in order; a name with a path separator or a dot-name is refused."""
    files, at = [], 0
    while at < len(blob):
        name_len, size = FILE_HEADER.unpack_from(blob, at)
        at += FILE_HEADER.size
        name = blob[at : at + name_len].decode()
        content = blob[at + name_len : at + name_len + size]
        at += name_len + size
        if not name or "/" in name or "\0" in name or name.startswith(".") or len(content) != size:
            complain("a file name or size in the payload is not acceptable")
            os._exit(EXIT_PAYLOAD_SHORT)
        files.append((name, content))
    return files


def argv(code_path: str, marker: bytes, environment: dict[str, str], command: list[str]) -> list[str]:
    """The launcher's arguments (after ``-c SOURCE``); ``parse_argv`` reads them back."""
    pairs = [f"{key}={value}" for key, value in environment.items()]
    return [code_path, marker.hex(), str(len(pairs)), *pairs, *command]


def parse_argv(args: list[str]) -> tuple[str, bytes, dict[str, str], list[str]]:
    """(code path, marker, environment, command) from the launcher's arguments."""
    code_path, marker, count = args[0], bytes.fromhex(args[1]), int(args[2])
    environment = dict(pair.split("=", 1) for pair in args[3 : 3 + count])
    return code_path, marker, environment, args[3 + count :]


def complain(message: str) -> None:
    os.write(2, f"crucible-launcher: {message}\n".encode())


def read_exactly(fd: int, size: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        chunk = os.read(fd, min(size - len(buffer), READ_CHUNK))
        if not chunk:
            complain("payload ended early")
            os._exit(EXIT_PAYLOAD_SHORT)
        buffer += chunk
    return bytes(buffer)


def write_new_file(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` (never an existing file, never through a symlink) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def open_stdin(directory: str, data: bytes) -> int:
    """A read-only fd holding ``data`` (an unlinked file), or ``/dev/null`` when there is none."""
    if not data:
        return os.open("/dev/null", os.O_RDONLY)
    path = os.path.join(directory, STDIN_FILE)
    write_new_file(path, data, 0o400)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    os.unlink(path)
    return fd


def install_filter(bpf: bytes) -> None:
    """Confine this process and everything it becomes to the BPF program ``bpf``; exit if the kernel refuses."""
    import ctypes  # only where a filter is sent: no cost for the runs that need none

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = SockFprog(len(bpf) // BPF_INSTRUCTION_BYTES, ctypes.addressof(program))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.prctl(
        PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0
    ):
        complain(f"cannot install the seccomp filter: {os.strerror(ctypes.get_errno())}")
        os._exit(EXIT_NO_FILTER)


def main(args: list[str]) -> None:
    code_path, marker, environment, command = parse_argv(args)
    filter_len, code_len, stdin_len, files_len = HEADER.unpack(read_exactly(0, HEADER.size))
    bpf = read_exactly(0, filter_len)
    code = read_exactly(0, code_len)
    stdin = read_exactly(0, stdin_len)
    directory = os.path.dirname(code_path)
    if not os.path.lexists(directory):  # a later program of several, in a directory of its own
        os.mkdir(directory, 0o755)
    if os.path.islink(directory) or not os.path.isdir(directory):
        complain(f"{directory} is not a directory of the sandbox's own")
        os._exit(EXIT_CANNOT_RUN)
    for name, content in unpack_files(read_exactly(0, files_len)):
        write_new_file(os.path.join(directory, name), content, 0o444)
    if os.path.basename(code_path):  # a directory alone: the code file is there already (a compiled run)
        write_new_file(code_path, code, 0o444)
    fd = open_stdin(directory, stdin)
    os.dup2(fd, 0)
    os.close(fd)
    if bpf:
        install_filter(bpf)
    os.write(2, marker)
    os.write(1, marker)
    try:
        os.execvpe(command[0], command, environment)  # noqa: S606 (no shell, by design)
    except OSError as exc:
        complain(f"cannot run {command[0]}: {exc.strerror}")
        os._exit(EXIT_CANNOT_RUN)


if __name__ == "__main__":
    main(sys.argv[1:])
