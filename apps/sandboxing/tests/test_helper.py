"""The in-sandbox helper (``sandbox/helper/crucible-helper.c``), compiled and run on the host.

Only what is safe outside a sandbox runs here: the collector (it only reads the directory it is
given), the launcher with a harmless command in a scratch directory, and serve with frames it
refuses (one it accepts SIGKILLs every process it may signal: never on the host; its behaviour is
tested in the sandbox, test_run_programs.py). The same binary runs in the
real sandbox in test_runner_contract.py, test_artifacts.py, test_run_programs.py and
test_bare_runtime.py (an image with nothing but the helper and one static program).
"""

import os
import re
import socket
import subprocess

from apps.sandboxing import helper
from apps.sandboxing.streams import ArtifactStreamParser

MARKER = b"\x00go\x00"
NONCE = bytes(range(16))


def collect(binary, root, *, max_files=10, max_bytes=1000) -> ArtifactStreamParser:
    """Walk ``root`` with the helper's collector and parse its records as the host does."""
    parser = ArtifactStreamParser(max_files=max_files, max_bytes=max_bytes)
    argv = [str(binary), *helper.collect_argv(os.fspath(root), max_files, max_bytes)[1:]]
    parser.feed(subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout)
    parser.finish()
    return parser


def payload(code, stdin, files=None):
    return helper.pack_payload(code, stdin, files=files, nonce=NONCE)


def trailer(status, output):
    return helper.trailer_start(NONCE) + f"{status}:{output}".encode() + b"\x00"


def launch(binary, code_path, command, payload, environment=None, output_dir=None):
    """Run the helper's launcher on the host (a harmless ``command``); (exit code, stdout, stderr)."""
    directory = os.path.dirname(code_path)
    environment = environment or {"PATH": "/usr/bin:/bin"}
    argv = helper.launch_argv(os.fspath(code_path), MARKER, environment, command, output_dir or directory)
    done = subprocess.run([str(binary), *argv[1:]], input=payload, capture_output=True, timeout=30, cwd=directory)
    return done.returncode, done.stdout, done.stderr


def test_the_host_starts_every_helper_program_by_its_fixed_path_without_a_shell():
    assert helper.argv("collect", "/output", "3", "100") == [helper.HELPER_PATH, "collect", "/output", "3", "100"]
    assert helper.IDLE_COMMAND == [helper.HELPER_PATH, "idle"]
    assert helper.HELPER_PATH == "/usr/local/libexec/crucible-helper"
    command = ["python3", "-u", "m.py"]
    launch_argv = helper.launch_argv("/sandbox/main.py", b"\x00go\x00", {"A": "x=y"}, command, "/output")
    assert launch_argv[1:] == [
        "launch",
        "/sandbox/main.py",
        "00676f00",
        "/output",
        "1",
        "A=x=y",
        "python3",
        "-u",
        "m.py",
    ]


def test_the_helper_source_and_the_host_share_every_bound():
    source = helper.SOURCE_PATH.read_text()
    defined = dict(re.findall(r"^#define (\w+) (\d+)", source, re.MULTILINE))
    for name in (
        "MAX_ENTRIES",
        "MAX_DEPTH",
        "MAX_NAME_BYTES",
        "EXIT_PAYLOAD_SHORT",
        "EXIT_NO_FILTER",
        "EXIT_CANNOT_RUN",
        "NONCE_BYTES",
    ):
        assert int(defined[name]) == getattr(helper, name), name


def test_the_launcher_payload_is_the_code_then_the_stdin_with_their_lengths_and_the_nonce():
    packed = payload(b"print(1)", b"in")
    assert helper.HEADER.unpack(packed[: helper.HEADER.size]) == (0, 8, 2, 0, NONCE)
    assert packed[helper.HEADER.size :] == b"print(1)in"


def test_the_launcher_writes_the_files_read_only_then_runs_the_command_with_its_stdin_args_and_env(
    compiled_helper, tmp_path
):
    packed = payload(b"the code\n", b"the stdin\n", files={"data.txt": b"a file\n"})
    script = 'cat; cat "$1"; cat data.txt; echo "$GREETING"; exit 3'
    command = ["/bin/sh", "-c", script, "sh", str(tmp_path / "main.txt")]
    exit_code, stdout, stderr = launch(
        compiled_helper, tmp_path / "main.txt", command, packed, {"PATH": "/usr/bin:/bin", "GREETING": "hello"}
    )
    assert (exit_code, stderr) == (3, MARKER + trailer(3, "files"))
    assert stdout == MARKER + b"the stdin\nthe code\na file\nhello\n" + trailer(3, "files")
    assert sorted(os.listdir(tmp_path)) == ["data.txt", "main.txt"]  # the stdin file is unlinked
    assert oct((tmp_path / "main.txt").stat().st_mode & 0o777) == "0o444"


def test_the_launcher_never_writes_through_a_link_nor_over_a_file(compiled_helper, tmp_path):
    (tmp_path / "target").write_text("kept")
    (tmp_path / "main.txt").symlink_to(tmp_path / "target")
    exit_code, stdout, stderr = launch(compiled_helper, tmp_path / "main.txt", ["true"], payload(b"x", b""))
    assert exit_code == helper.EXIT_CANNOT_RUN and stdout == b""
    assert stderr.startswith(b"crucible-launcher: cannot create main.txt")
    assert (tmp_path / "target").read_text() == "kept"


def test_the_launcher_refuses_a_linked_directory_and_a_dot_file_name(compiled_helper, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "p1").symlink_to(tmp_path / "real")
    exit_code, _, stderr = launch(compiled_helper, tmp_path / "p1" / "main.txt", ["true"], payload(b"x", b""))
    assert exit_code == helper.EXIT_CANNOT_RUN and b"is not a directory of the sandbox's own" in stderr
    dotted = payload(b"x", b"", files={".profile": b"y"})
    exit_code, _, stderr = launch(compiled_helper, tmp_path / "real" / "main.txt", ["true"], dotted)
    assert exit_code == helper.EXIT_PAYLOAD_SHORT and b"not acceptable" in stderr
    assert os.listdir(tmp_path / "real") == []


def test_a_short_payload_or_a_missing_command_is_the_launchers_own_complaint(compiled_helper, tmp_path):
    exit_code, stdout, stderr = launch(compiled_helper, tmp_path / "m", ["true"], payload(b"code", b"")[:-2])
    assert (exit_code, stdout, stderr) == (helper.EXIT_PAYLOAD_SHORT, b"", b"crucible-launcher: payload ended early\n")
    exit_code, stdout, stderr = launch(compiled_helper, tmp_path / "n", ["no-such-program"], payload(b"", b""))
    assert exit_code == helper.EXIT_CANNOT_RUN and stdout == MARKER + trailer(127, "files")
    complaint = b"crucible-launcher: cannot run no-such-program: No such file or directory\n"
    assert stderr == MARKER + complaint + trailer(127, "files")


def test_the_trailer_says_whether_the_output_directory_holds_anything(compiled_helper, tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    command = ["/bin/sh", "-c", 'test -z "$1" || : > "$1"', "sh"]
    _, stdout, _ = launch(compiled_helper, tmp_path / "m", command, payload(b"", b""), output_dir=output)
    assert stdout == MARKER + trailer(0, "empty")
    _, stdout, stderr = launch(
        compiled_helper, tmp_path / "n", [*command, str(output / "made")], payload(b"", b""), output_dir=output
    )
    assert stdout == stderr == MARKER + trailer(0, "files")
    (tmp_path / "linked").symlink_to(tmp_path / "empty", target_is_directory=True)
    (tmp_path / "empty").mkdir()
    _, stdout, _ = launch(compiled_helper, tmp_path / "o", ["true"], payload(b"", b""), output_dir=tmp_path / "linked")
    assert stdout == MARKER + trailer(0, "files")  # never through a link: unclear is "files"


def test_a_program_killed_by_a_signal_exits_128_plus_the_signal_and_its_launcher_outlives_a_sigterm(
    compiled_helper, tmp_path
):
    exit_code, stdout, _ = launch(compiled_helper, tmp_path / "m", ["/bin/sh", "-c", "kill -9 $$"], payload(b"", b""))
    assert (exit_code, stdout) == (137, MARKER + trailer(137, "files"))
    # The parent ignores a cancel's SIGTERM (term-all sends it to every process): it still reports.
    script = "kill -TERM $PPID; kill -TERM $$"
    exit_code, stdout, _ = launch(compiled_helper, tmp_path / "n", ["/bin/sh", "-c", script], payload(b"", b""))
    assert (exit_code, stdout) == (143, MARKER + trailer(143, "files"))


def test_a_launcher_killed_by_its_program_writes_no_trailer(compiled_helper, tmp_path):
    script = "kill -KILL $PPID; echo after"
    exit_code, stdout, stderr = launch(compiled_helper, tmp_path / "m", ["/bin/sh", "-c", script], payload(b"", b""))
    assert exit_code == -9 and helper.TRAILER_START not in stdout + stderr  # the parent was SIGKILLed


def test_the_collector_reports_regular_files_with_their_relative_names(compiled_helper, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(10)))
    parser = collect(compiled_helper, tmp_path)
    assert {a.name: a.data for a in parser.artifacts} == {"a.txt": b"hello", "sub/deeper/b.bin": bytes(range(10))}
    assert (parser.done, parser.truncated) == (True, False)


def test_the_collector_never_follows_a_symlink_nor_opens_a_fifo_or_socket(compiled_helper, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    root = tmp_path / "output"
    root.mkdir()
    (root / "link").symlink_to(outside / "secret")
    (root / "dirlink").symlink_to(outside)
    os.mkfifo(root / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock"))
    (root / "real").write_text("real")
    try:
        parser = collect(compiled_helper, root)
    finally:
        server.close()
    assert [a.name for a in parser.artifacts] == ["real"]
    assert parser.truncated is False


def test_the_collector_enters_directories_only_to_its_depth_limit(compiled_helper, tmp_path):
    shallow = tmp_path.joinpath(*["d"] * helper.MAX_DEPTH)
    shallow.mkdir(parents=True)
    (shallow / "kept").write_text("x")
    (shallow / "d").mkdir()
    (shallow / "d" / "too-deep").write_text("x")
    assert [a.name for a in collect(compiled_helper, tmp_path).artifacts] == [
        "/".join(["d"] * helper.MAX_DEPTH + ["kept"])
    ]


def test_a_file_over_the_byte_cap_is_named_but_not_sent(compiled_helper, tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 2000)
    (tmp_path / "small").write_bytes(b"y" * 10)
    parser = collect(compiled_helper, tmp_path, max_bytes=1000)
    assert [a.name for a in parser.artifacts] == ["small"]
    assert parser.truncated is True


def test_more_files_than_the_count_cap_end_the_list_truncated(compiled_helper, tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}").write_text(str(i))
    parser = collect(compiled_helper, tmp_path, max_files=3)
    assert [a.name for a in parser.artifacts] == ["f0", "f1", "f2"]
    assert (parser.done, parser.truncated) == (True, True)


def test_files_are_reported_in_name_order_a_directory_after_its_files(compiled_helper, tmp_path):
    for name in ("b", "a", "sub/z", "sub/c", "C"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    assert [a.name for a in collect(compiled_helper, tmp_path).artifacts] == ["C", "a", "b", "sub/c", "sub/z"]


def test_a_missing_root_is_an_empty_list(compiled_helper, tmp_path):
    parser = collect(compiled_helper, tmp_path / "nothing-here")
    assert (parser.artifacts, parser.done, parser.truncated) == ([], True, False)


def serve(binary, frames):
    """Run the helper's serve on the host with ``frames`` it must refuse before running anything: a
    launch or reset frame it accepts kills every process it can signal (on the host, the host's)."""
    done = subprocess.run(
        [str(binary), *helper.SERVE_COMMAND[1:]], input=b"".join(frames), capture_output=True, timeout=30
    )
    return done.returncode, done.stdout, done.stderr


def test_a_launch_frame_carries_the_workdir_and_the_launchers_arguments_then_the_payload():
    argv = helper.launch_argv("/sandbox/main.py", MARKER, {"A": "1"}, ["python3", "main.py"], "/output")
    frame = helper.launch_frame("/tmp", argv, b"PAYLOAD")
    fields = b"/tmp\0/sandbox/main.py\0" + MARKER.hex().encode() + b"\0/output\x001\0A=1\0python3\0main.py\0"
    assert (
        frame == b"L" + (4 + len(fields) + 7).to_bytes(4, "big") + len(fields).to_bytes(4, "big") + fields + b"PAYLOAD"
    )
    reset = helper.reset_frame(NONCE, ("/tmp", "/output"))
    assert reset == b"R" + (16 + 13).to_bytes(4, "big") + NONCE + b"/tmp\0/output\0"
    assert helper.reset_reply(NONCE) == b"\0crucible:reset:" + NONCE.hex().encode() + b":"


def test_serve_refuses_an_unknown_or_oversized_frame_and_a_short_one_and_ends_at_eof(compiled_helper):
    assert serve(compiled_helper, []) == (0, b"", b"")
    assert serve(compiled_helper, [b"X\x00\x00\x00\x00"])[0] == helper.EXIT_CANNOT_RUN
    assert serve(compiled_helper, [b"L\x7f\xff\xff\xff"])[0] == helper.EXIT_CANNOT_RUN
    assert serve(compiled_helper, [b"L\x00\x00\x00\x09abc"])[0] == helper.EXIT_PAYLOAD_SHORT
    bad_args = helper.launch_frame("/nonexistent", [helper.HELPER_PATH, "launch", "only-one"], payload(b"", b""))
    exit_code, stdout, stderr = serve(compiled_helper, [bad_args])
    assert exit_code == helper.EXIT_CANNOT_RUN and stdout == b"" and b"usage" in stderr


def test_await_runs_the_one_frame_it_is_sent_then_exits_with_its_status_once_stdin_ends(compiled_helper, tmp_path):
    """The main process of a fresh sandbox, on the host with a harmless command: nothing before the
    frame, the marker, the program's output, the trailer, its status."""
    code_path = tmp_path / "main.sh"
    argv = helper.launch_argv(os.fspath(code_path), MARKER, {"PATH": "/usr/bin:/bin"}, ["sh", "main.sh", "x"], "/")
    frame = helper.launch_frame(os.fspath(tmp_path), argv, payload(b"echo hi $1; cat; exit 3", b"in"))
    done = subprocess.run(
        [str(compiled_helper), *helper.AWAIT_COMMAND[1:]], input=frame + b"ignored", capture_output=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (3, MARKER + b"hi x\nin" + trailer(3, "files"))
    assert done.stderr == MARKER + trailer(3, "files")


def test_await_refuses_a_frame_that_is_not_a_launch(compiled_helper):
    reset = helper.reset_frame(NONCE, ("/nonexistent",))
    done = subprocess.run(
        [str(compiled_helper), *helper.AWAIT_COMMAND[1:]], input=reset, capture_output=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (helper.EXIT_CANNOT_RUN, b"")
