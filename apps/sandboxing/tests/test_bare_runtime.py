"""Any image can be a runtime: one that holds nothing but the sandbox helper and one static program
(no python3, no shell, no C library) runs programs like any other, against the real engine (under
gVisor, and again under runc by ``make test``).

The program is ``bare/toy.c``, a tiny line-oriented language compiled static; its "code" is a list
of commands (print, cat, write a file to /output, spin, exit N, leave a child behind, ...).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from apps.sandboxing import engine, helper, image
from apps.sandboxing.outcomes import Command, Outcome, RunRequest
from apps.sandboxing.policy import SANDBOX_UID, Runtime
from apps.sandboxing.pool import remove_pools_of
from apps.sandboxing.runner import Program, Reuse, run_programs
from apps.sandboxing.tests.conftest import execute, small_limits

pytestmark = pytest.mark.docker

TOY_SOURCE = Path(__file__).parent / "bare" / "toy.c"
TOY_PATH = "/usr/local/bin/toy"
REPOSITORY = "crucible-bare-test"
# Mount points and the directories the engine binds files into; nothing else.
DIRECTORIES = ("tmp", "output", "sandbox", "build", "proc", "sys", "dev", "etc", "sbin")


def build_bare_image(work: Path) -> str:
    """An image of exactly the helper and the toy (content-tagged, so reused while both are unchanged)."""
    made_of = helper.digest() + hashlib.sha256(TOY_SOURCE.read_bytes()).hexdigest()
    reference = f"{REPOSITORY}:{hashlib.sha256(made_of.encode()).hexdigest()[:12]}"
    if image.find_image(reference) is not None:
        return reference
    rootfs = work / "rootfs"
    for directory in DIRECTORIES:
        (rootfs / directory).mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    image.install_helper(rootfs)
    toy = rootfs / TOY_PATH.lstrip("/")
    toy.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", *helper.COMPILE_FLAGS, "-o", str(toy), str(TOY_SOURCE)], check=True, capture_output=True)
    tarball = work / "rootfs.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(rootfs, arcname=".", filter=_owned_by_root)
    name, tag = reference.split(":")
    engine.client().api.import_image_from_file(
        str(tarball), repository=name, tag=tag, changes=[f"USER {SANDBOX_UID}:{SANDBOX_UID}", "WORKDIR /tmp"]
    )
    return reference


def _owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Runtime:
    reference = build_bare_image(tmp_path_factory.mktemp("bare"))
    return Runtime(image=reference, command=[TOY_PATH, "{file}"], file_name="main.toy")


def run_toy(bare: Runtime, code: str, **kwargs):
    return execute(code, runtime=bare, **kwargs)


def run_several(bare: Runtime, codes: list[str], reuse: Reuse | None = None):
    """Run each of ``codes`` as one program, one after another in one sandbox; (results, stdout of each)."""
    output: list[tuple[int, bytes]] = []
    current = [-1]

    def on_program(index):
        current[0] = index

    request = RunRequest(run_id=str(uuid.uuid4()), runtime=bare, code=b"", stdin=b"", limits=small_limits())
    results = run_programs(
        request,
        [Program(code.encode()) for code in codes],
        on_output=lambda stream, data: output.append((current[0], data)) if stream == "stdout" else None,
        control=lambda: None,
        on_program=on_program,
        reuse=reuse,
    )
    return results, [b"".join(d for i, d in output if i == index) for index in range(len(codes))]


def image_files(reference: str) -> dict[str, tarfile.TarInfo]:
    """Every file of an image by path, from the engine's export of it (``docker save``)."""
    saved = io.BytesIO(b"".join(engine.client().images.get(reference).save()))
    files = {}
    with tarfile.open(fileobj=saved) as outer:
        for member in outer.getmembers():
            if member.name.endswith(".tar") or member.name.startswith("blobs/"):
                try:
                    layer = tarfile.open(fileobj=outer.extractfile(member))
                except (tarfile.TarError, AttributeError):
                    continue
                files.update({"/" + m.name.removeprefix("./"): m for m in layer.getmembers()})
    return files


def test_the_bare_image_has_neither_python3_nor_a_shell_only_the_helper_and_the_toy(bare):
    files = image_files(bare.image)
    programs = sorted(path for path, member in files.items() if member.isfile())
    assert programs == sorted([helper.HELPER_PATH, TOY_PATH])
    installed = files[helper.HELPER_PATH]
    assert (installed.uid, installed.gid, installed.mode & 0o7777) == (0, 0, 0o755)


def test_alice_hello_world_runs_in_an_image_without_python3_or_bash(bare):
    observed = run_toy(bare, "print hello, world\n")
    assert (observed.result.outcome, observed.result.exit_code) == (Outcome.EXITED, 0), observed.result.error
    assert (observed.stdout, observed.stderr) == (b"hello, world\n", b"")


def test_a_failing_program_reports_its_own_exit_code(bare):
    observed = run_toy(bare, "print before\nexit 3\nprint never\n")
    assert (observed.result.outcome, observed.result.exit_code) == (Outcome.EXITED, 3)
    assert observed.stdout == b"before\n"


def test_stdin_and_arguments_reach_the_program(bare):
    request_runtime = Runtime(image=bare.image, command=[TOY_PATH, "{file}", "one", "two words"], file_name="main.toy")
    observed = execute("cat\nargs\n", runtime=request_runtime, stdin=b"line 1\nline 2\n")
    assert observed.result.exit_code == 0
    assert observed.stdout == b"line 1\nline 2\none\ntwo words\n"


def test_a_spinning_program_times_out(bare):
    observed = run_toy(bare, "print started\nspin\n", timeout_s=1)
    assert observed.result.outcome is Outcome.TIMED_OUT
    assert observed.stdout == b"started\n"


def test_files_it_leaves_in_output_are_collected(bare):
    observed = run_toy(bare, "write result.txt 42\nwrite notes.md done\n")
    assert observed.result.exit_code == 0
    artifacts = {a.name: a.data for a in observed.result.artifacts}
    assert artifacts == {"notes.md": b"done\n", "result.txt": b"42\n"}


def test_a_cancel_ends_the_program_within_its_grace(bare):
    observed = run_toy(
        bare, "print started\nspin\n", timeout_s=30, control=lambda at, out: Command.CANCEL if out else None
    )
    assert observed.result.outcome is Outcome.CANCELLED
    assert observed.stdout == b"started\n"


def test_a_child_left_behind_is_gone_before_the_next_program(bare):
    results, stdout = run_several(bare, ["leave-child\nprint left one\n", "census\n"])
    assert [r.outcome for r in results] == [Outcome.EXITED, Outcome.EXITED]
    assert stdout == [b"left one\n", f"{helper.HELPER_PATH} idle\n".encode()]


@pytest.fixture
def reuse():
    owner = f"test-bare-{uuid.uuid4().hex[:8]}"
    yield Reuse(owner=owner, group=str(uuid.uuid4()))
    remove_pools_of(owner)


def test_the_next_sample_of_a_batch_finds_the_bare_sandbox_reset_and_clean(bare, reuse):
    first, _ = run_several(bare, ["litter\nwrite out.txt x\nleave-child\n"], reuse=reuse)
    assert first[0].outcome is Outcome.EXITED and first[0].warm is False
    second, stdout = run_several(bare, ["census\nlist /tmp\nlist /output\nlist /dev/shm\n"], reuse=reuse)
    assert second[0].outcome is Outcome.EXITED and second[0].warm is True
    assert stdout == [f"{helper.HELPER_PATH} idle\n\n\n\n".encode()]


def test_the_program_starts_with_sigpipe_and_sigxfsz_ignored_and_sigterm_at_its_default(bare):
    """As under the interpreter-based launcher the helper replaced: EPIPE and EFBIG, never a kill."""
    observed = run_toy(bare, "signals\n")
    assert (observed.result.outcome, observed.result.exit_code) == (Outcome.EXITED, 0)
    assert observed.stdout == b"pipe EPIPE\nfsize 1 EFBIG\nterm default\n"
