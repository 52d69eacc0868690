"""Artifacts: files the program leaves in /output, collected as hostile data.

Real runs cover what a program can do to /output (symlinks, fifos, huge files, many files, odd
names); parser tests cover what a tampered collector stream could say ("../", absolute names,
NULs, lengths over the caps, garbage).
"""

import hashlib
import struct

import pytest

from apps.sandboxing.streams import ArtifactStreamParser, FrameDemuxer, ProtocolError, sanitize_name
from apps.sandboxing.tests.conftest import execute

pytestmark = pytest.mark.docker

PASSWD_MARK = b"root:x:0:0"


def by_name(run):
    return {a.name: a for a in run.result.artifacts}


def test_files_in_output_become_artifacts_with_size_and_sha256():
    code = (
        "import os\nopen('/output/a.txt', 'w').write('hello')\n"
        "os.makedirs('/output/sub/deeper')\nopen('/output/sub/deeper/b.bin', 'wb').write(bytes(range(256)))\n"
        "print(os.environ['CRUCIBLE_OUTPUT_DIR'])\n"
    )
    run = execute(code)
    assert run.stdout == b"/output\n"
    files = by_name(run)
    assert set(files) == {"a.txt", "sub/deeper/b.bin"}
    assert files["a.txt"].data == b"hello" and files["a.txt"].size == 5
    assert files["sub/deeper/b.bin"].sha256 == hashlib.sha256(bytes(range(256))).hexdigest()
    assert run.result.artifacts_truncated is False


def test_symlinks_to_host_files_are_never_followed():
    code = (
        "import os\nos.symlink('/etc/passwd', '/output/passwd')\nos.symlink('/', '/output/root')\n"
        "os.symlink('../../etc/shadow', '/output/up')\nos.symlink('/proc/self/environ', '/output/env')\n"
        "os.makedirs('/output/d')\nos.symlink('/etc', '/output/d/etc')\n"
        "open('/output/real.txt', 'w').write('real')\n"
    )
    run = execute(code)
    assert set(by_name(run)) == {"real.txt"}
    assert all(PASSWD_MARK not in a.data for a in run.result.artifacts)


def test_a_hardlink_to_a_host_file_cannot_be_made_and_inner_hardlinks_are_plain_copies():
    code = (
        "import os, errno\n"
        "try:\n    os.link('/etc/passwd', '/output/passwd'); print('linked')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
        "open('/output/a', 'w').write('A')\nos.link('/output/a', '/output/b')\n"
    )
    run = execute(code)
    assert run.text.strip() in ("EXDEV", "EPERM")
    assert {a.name: a.data for a in run.result.artifacts} == {"a": b"A", "b": b"A"}


def test_fifos_and_sockets_in_output_are_skipped_without_blocking():
    code = (
        "import os, socket\nos.mkfifo('/output/fifo')\n"
        "s = socket.socket(socket.AF_UNIX); s.bind('/output/sock')\n"
        "open('/output/ok.txt', 'w').write('ok')\n"
    )
    run = execute(code)
    assert set(by_name(run)) == {"ok.txt"}
    assert run.result.artifacts_truncated is False  # the collector reached its end record: it never blocked


def test_device_nodes_cannot_be_created_in_output():
    code = (
        "import os, errno\n"
        "try:\n    os.mknod('/output/null', 0o20666, os.makedev(1, 3)); print('made')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    run = execute(code)
    assert run.text.strip() == "EPERM"
    assert run.result.artifacts == []


def test_odd_names_are_sanitised():
    code = (
        "names = ['..evil', 'a\\nb', 'tab\\there', 'esc\\x1b[31m', 'back\\\\slash', 'caf\\u00e9']\n"
        "for n in names:\n    open('/output/' + n, 'w').write(n)\n"
        "open(b'/output/bad\\xff', 'w').write('x')\n"
    )
    run = execute(code)
    names = set(by_name(run))
    assert names == {"..evil", "a_b", "tab_here", "esc_[31m", "back_slash", "café", "bad\ufffd"}


def test_a_file_over_the_byte_cap_is_left_out_and_flagged():
    code = "open('/output/big', 'wb').write(b'x' * (3 << 20))\nopen('/output/small', 'wb').write(b'y' * 10)\n"
    run = execute(code, artifact_max_bytes=1 << 20)
    assert set(by_name(run)) == {"small"}
    assert run.result.artifacts_truncated is True


def test_the_total_byte_cap_holds_across_files():
    code = "for i in range(5):\n    open(f'/output/f{i}', 'wb').write(bytes(300_000))\n"
    run = execute(code, artifact_max_bytes=1_000_000)
    assert len(run.result.artifacts) == 3
    assert sum(a.size for a in run.result.artifacts) <= 1_000_000
    assert run.result.artifacts_truncated is True


def test_ten_thousand_files_are_capped_by_count():
    code = "import os\nfor i in range(10_000):\n    open(f'/output/f{i:05}', 'w').close()\n"
    code += "print(len(os.listdir('/output')))\n"
    run = execute(code, tmpfs_inodes=12_000, artifact_max_files=32, timeout_s=10)
    assert run.stdout == b"10000\n"
    assert [a.name for a in run.result.artifacts] == [f"f{i:05}" for i in range(32)]
    assert run.result.artifacts_truncated is True


def test_a_deep_directory_chain_is_bounded():
    code = "import os\np = '/output' + '/d' * 40\nos.makedirs(p)\nopen(p + '/deep', 'w').write('x')\n"
    run = execute(code)
    assert run.result.artifacts == []


def test_a_path_over_255_bytes_is_skipped_and_counted_and_the_rest_kept():
    code = (
        "import os\ndeep = os.path.join('/output', *['d' * 49] * 6)\nos.makedirs(deep)\n"
        "open(deep + '/long.txt', 'w').write('x')\nopen('/output/kept.txt', 'w').write('kept')\n"
    )
    run = execute(code)
    assert run.result.outcome == "exited" and run.result.exit_code == 0
    assert set(by_name(run)) == {"kept.txt"}
    assert run.result.artifacts_skipped_names == 1


def test_no_artifacts_are_collected_after_a_timeout():
    run = execute("open('/output/a', 'w').write('a')\nwhile True: pass", timeout_s=1)
    assert run.result.outcome == "timed_out"
    assert run.result.artifacts == []


# --- a hostile collector stream (what a tampering process could write) ------------------------
def record(name: bytes, data: bytes, kind: bytes = b"F", declared: int | None = None) -> bytes:
    size = len(data) if declared is None else declared
    return kind + struct.pack(">IQ", len(name), size) + name + data


def parse(stream: bytes, *, max_files=10, max_bytes=1000, step=7) -> ArtifactStreamParser:
    parser = ArtifactStreamParser(max_files=max_files, max_bytes=max_bytes)
    for i in range(0, len(stream), step):
        parser.feed(stream[i : i + step])
    parser.finish()
    return parser


def test_a_clean_stream_parses_in_any_chunking():
    stream = record(b"a.txt", b"hello") + record(b"d/b", b"") + b"E"
    for step in (1, 3, 1000):
        parser = parse(stream, step=step)
        assert [(a.name, a.data) for a in parser.artifacts] == [("a.txt", b"hello"), ("d/b", b"")]
        assert parser.truncated is False


@pytest.mark.parametrize(
    "name", [b"../etc/passwd", b"/etc/passwd", b"a/../../b", b"a\x00b", b"./a", b"a//b", b"..", b"a/" * 20 + b"x"]
)
def test_dangerous_names_in_the_stream_are_refused(name):
    parser = parse(record(name, b"x") + record(b"fine", b"y") + b"E")
    assert [a.name for a in parser.artifacts] == ["fine"]
    assert parser.truncated is True


def test_a_declared_length_over_the_cap_stops_parsing_without_buffering_it():
    parser = ArtifactStreamParser(max_files=10, max_bytes=1000)
    parser.feed(record(b"huge", b"", declared=10**12))
    parser.feed(b"x" * 100_000)
    assert parser.failed and parser.truncated
    assert len(parser._buffer) == 0


def test_more_files_than_the_count_cap_stop_parsing():
    stream = b"".join(record(f"f{i}".encode(), b"x") for i in range(5)) + b"E"
    parser = parse(stream, max_files=3)
    assert len(parser.artifacts) == 3
    assert parser.truncated is True


def test_garbage_and_a_missing_end_mark_the_list_truncated():
    assert parse(b"Zgarbage").truncated is True
    parser = parse(record(b"a", b"1"))
    assert [a.name for a in parser.artifacts] == ["a"] and parser.truncated is True


def test_a_huge_name_length_is_refused():
    parser = ArtifactStreamParser(max_files=10, max_bytes=1000)
    parser.feed(b"F" + struct.pack(">IQ", 2**31, 1))
    assert parser.failed


def test_duplicate_names_keep_the_first():
    parser = parse(record(b"a", b"1") + record(b"a", b"2") + b"E")
    assert [(a.name, a.data) for a in parser.artifacts] == [("a", b"1")]


def test_sanitize_name_keeps_ordinary_relative_names():
    assert sanitize_name(b"results/run-1/out.json") == "results/run-1/out.json"
    assert sanitize_name(b"") is None


# --- the engine's multiplexed stream ----------------------------------------------------------
def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def test_the_demuxer_handles_headers_split_across_reads():
    stream = frame(1, b"out") + frame(2, b"err") + frame(1, b"more")
    demux = FrameDemuxer()
    pieces = []
    for byte in stream:
        pieces += demux.feed(bytes([byte]))
    out = b"".join(d for s, d in pieces if s == 1)
    err = b"".join(d for s, d in pieces if s == 2)
    assert (out, err) == (b"outmore", b"err")


def test_the_demuxer_passes_a_huge_frame_on_in_pieces_as_it_arrives():
    demux = FrameDemuxer()
    header = bytes([1, 0, 0, 0]) + struct.pack(">I", 2**32 - 1)
    pieces = demux.feed(header + b"a" * 1000)
    assert pieces == [(1, b"a" * 1000)]
    assert demux.feed(b"b" * 10) == [(1, b"b" * 10)]


def test_the_demuxer_refuses_an_unknown_stream_type():
    with pytest.raises(ProtocolError):
        FrameDemuxer().feed(frame(7, b"x"))
