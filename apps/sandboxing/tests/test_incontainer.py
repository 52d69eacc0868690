"""The programs that run inside the sandbox, tested as ordinary modules on the host.

Only what is safe outside a sandbox runs here: the collector (it only reads the directory it is
given) and the launcher's argument and payload encoding (never its ``main``, which execs a
command). The same programs run in the real sandbox in test_runner_contract.py and test_artifacts.py.
"""

import os
import socket

from apps.sandboxing.incontainer import collector, launcher, python_argv, source
from apps.sandboxing.streams import ArtifactStreamParser


def collect(root, *, max_files=10, max_bytes=1000) -> ArtifactStreamParser:
    """Walk ``root`` with the collector and parse its records as the host does."""
    parser = ArtifactStreamParser(max_files=max_files, max_bytes=max_bytes)
    collector.Collector(os.fsencode(root), max_files, max_bytes, parser.feed).run()
    parser.finish()
    return parser


def test_the_programs_are_passed_as_source_to_an_isolated_python_without_a_shell():
    argv = python_argv("collector", "/output", "3", "100")
    assert argv[:5] == ["python3", "-I", "-S", "-c", source("collector")]
    assert argv[5:] == ["/output", "3", "100"]
    assert "def main(" in source("launcher") and "def facts(" in source("canary")


def test_the_launcher_reads_back_the_arguments_the_host_gives_it():
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "ODD": "a=b"}
    command = ["python3", "-u", "/sandbox/main.py", "--flag=1"]
    args = launcher.argv("/sandbox/main.py", b"\x00go\x00", environment, command)
    assert launcher.parse_argv(args) == ("/sandbox/main.py", b"\x00go\x00", environment, command)


def test_the_launcher_payload_is_the_code_then_the_stdin_with_their_lengths():
    payload = launcher.pack_payload(b"print(1)", b"in")
    assert launcher.HEADER.unpack(payload[: launcher.HEADER.size]) == (0, 8, 2, 0)
    assert payload[launcher.HEADER.size :] == b"print(1)in"


def test_the_collector_reports_regular_files_with_their_relative_names(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(10)))
    parser = collect(tmp_path)
    assert {a.name: a.data for a in parser.artifacts} == {"a.txt": b"hello", "sub/deeper/b.bin": bytes(range(10))}
    assert (parser.done, parser.truncated) == (True, False)


def test_the_collector_never_follows_a_symlink_nor_opens_a_fifo_or_socket(tmp_path):
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
        parser = collect(root)
    finally:
        server.close()
    assert [a.name for a in parser.artifacts] == ["real"]
    assert parser.truncated is False


def test_the_collector_enters_directories_only_to_its_depth_limit(tmp_path):
    shallow = tmp_path.joinpath(*["d"] * collector.MAX_DEPTH)
    shallow.mkdir(parents=True)
    (shallow / "kept").write_text("x")
    (shallow / "d").mkdir()
    (shallow / "d" / "too-deep").write_text("x")
    assert [a.name for a in collect(tmp_path).artifacts] == ["/".join(["d"] * collector.MAX_DEPTH + ["kept"])]


def test_a_file_over_the_byte_cap_is_named_but_not_sent(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 2000)
    (tmp_path / "small").write_bytes(b"y" * 10)
    parser = collect(tmp_path, max_bytes=1000)
    assert [a.name for a in parser.artifacts] == ["small"]
    assert parser.truncated is True


def test_more_files_than_the_count_cap_end_the_list_truncated(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}").write_text(str(i))
    parser = collect(tmp_path, max_files=3)
    assert [a.name for a in parser.artifacts] == ["f0", "f1", "f2"]
    assert (parser.done, parser.truncated) == (True, True)


def test_a_missing_root_is_an_empty_list(tmp_path):
    parser = collect(tmp_path / "nothing-here")
    assert (parser.artifacts, parser.done, parser.truncated) == ([], True, False)


def test_the_reaper_spares_init_the_oldest_process_and_itself():
    from apps.sandboxing.incontainer import reaper

    found = {1: 100, 7: 105, 9: 300, 12: 300, 40: 310}
    assert reaper.left_behind(found, me=40) == [9, 12]
    assert reaper.left_behind({1: 100, 40: 310}, me=40) == []
    assert reaper.left_behind({1: 100, 3: 200, 2: 200, 40: 310}, me=40) == [3]  # a tie: the lower pid is the idle one
