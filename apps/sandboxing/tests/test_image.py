"""The sandbox image built by `build_sandbox_image`: present, python3 runs as a non-root user."""

import contextlib
import io
import json
import tarfile
import uuid

import docker.errors
import pytest
from django.conf import settings
from django.core.management import call_command

from apps.sandboxing import engine, helper
from apps.sandboxing.apt_sources import AptSource, _parse_deb822, _parse_list, debian_mirror
from apps.sandboxing.image import HELPER_LABEL, current_image
from apps.sandboxing.policy import SANDBOX_USER

pytestmark = pytest.mark.docker


def _run(command, user=None, tmpfs=None):
    """Run ``command`` in a throwaway container of the image (no network, read-only); its stdout.

    A non-zero exit raises ``ContainerError``, so a check cannot pass because its tool failed.
    """
    return engine.client().containers.run(
        settings.SANDBOX_IMAGE,
        command,
        remove=True,
        network_mode="none",
        read_only=True,
        user=user,
        tmpfs=tmpfs or {},
        cap_drop=["ALL"],
        cap_add=["DAC_READ_SEARCH"],  # root may read every directory, and nothing more
    )


def existing(paths: list[str]) -> list[str]:
    """Which of ``paths`` exist in the image (symlinks count, even dangling ones)."""
    code = "import json, os, sys; print(json.dumps([p for p in sys.argv[1:] if os.path.lexists(p)]))"
    return json.loads(_run(["python3", "-c", code, *paths]))


def test_build_command_reuses_the_existing_image(capsys):
    call_command("build_sandbox_image", "--if-missing")
    assert "present" in capsys.readouterr().out


def test_offline_build_is_content_tagged_and_idempotent(capsys):
    call_command("build_sandbox_image")
    out = capsys.readouterr().out
    assert "reused" in out
    image = engine.client().images.get(settings.SANDBOX_IMAGE)
    assert any(tag.startswith("crucible-sandbox:") and not tag.endswith(":latest") for tag in image.tags)


def test_python3_prints_as_a_non_root_user():
    assert _run(["python3", "-c", "import os; print(1, os.getuid() != 0)"]) == b"1 True\n"


def test_bash_is_there():
    assert _run(["bash", "-c", "echo $((6*7))"]) == b"42\n"


def test_nothing_is_setuid_or_setgid():
    # As root, so that find can read every directory and exits 0 only when it searched them all.
    assert _run(["find", "/", "-xdev", "-perm", "/6000", "-type", "f"], user="0") == b""


def test_the_search_for_setuid_files_would_find_one():
    """The check above can fail: the same search in a writable copy finds a file made setuid."""
    script = "cp /bin/true /tmp/t && chmod u+s /tmp/t && find /tmp -xdev -perm /6000 -type f"
    assert _run(["bash", "-c", script], user="0", tmpfs={"/tmp": "rw"}).split() == [b"/tmp/t"]


def test_no_package_manager_or_its_state_or_caches():
    paths = ["/usr/bin/apt", "/usr/bin/apt-get", "/usr/bin/apt-cache", "/etc/apt", "/var/lib/apt", "/var/cache/apt"]
    assert existing(paths) == []
    assert existing(["/usr/bin/python3", "/usr/bin/apt"]) == ["/usr/bin/python3"]  # the check does see files


class TestMirrorDiscovery:
    def test_one_line_sources(self):
        text = "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"
        assert _parse_list(text) == [AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib"))]

    def test_deb822_sources(self):
        text = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        assert _parse_deb822(text)[0].suites == ("bookworm", "bookworm-updates")

    def test_security_only_sources_are_not_a_mirror(self):
        sources = [AptSource("http://sec.example", ("bookworm-security",), ("main",))]
        with pytest.raises(RuntimeError, match="no mirror"):
            debian_mirror("bookworm", sources)

    def test_the_suite_itself_is_chosen(self):
        sources = [
            AptSource("http://sec.example", ("bookworm-security",), ("main",)),
            AptSource("http://m.example/debian", ("bookworm",), ("main",)),
        ]
        assert debian_mirror("bookworm", sources) == "http://m.example/debian"


def test_the_sandbox_helper_is_root_owned_read_only_and_runs_as_the_sandbox_user():
    script = (
        "import os, stat, subprocess; s = os.stat('/usr/local/libexec/crucible-helper');"
        "print(s.st_uid, s.st_gid, oct(stat.S_IMODE(s.st_mode)), os.access("
        "'/usr/local/libexec/crucible-helper', os.W_OK));"
        "print(subprocess.run(['/usr/local/libexec/crucible-helper', 'nothing']).returncode)"
    )
    assert _run(["python3", "-c", script], user=SANDBOX_USER) == b"0 0 0o755 False\n2\n"


def test_the_image_records_the_helper_it_carries_and_if_missing_rebuilds_one_without_it(capsys):
    client = engine.client()
    labels = client.images.get(settings.SANDBOX_IMAGE).attrs["Config"]["Labels"]
    assert labels[HELPER_LABEL] == helper.digest()
    stale = f"crucible-stale-helper-test:{uuid.uuid4().hex[:8]}"
    empty = io.BytesIO()
    with tarfile.open(fileobj=empty, mode="w") as archive:
        archive.addfile(tarfile.TarInfo("tmp"), None)
    client.api.import_image_from_data(empty.getvalue(), repository=stale.split(":")[0], tag=stale.split(":")[1])
    stale_id = client.images.get(stale).id
    try:
        assert current_image(stale) is None
        call_command("build_sandbox_image", "--if-missing", "--reference", stale)
        out = capsys.readouterr().out
        assert "predates this sandbox helper" in out and "reused" in out
        assert current_image(stale).id == client.images.get(settings.SANDBOX_IMAGE).id
    finally:
        client.images.remove(stale)
        # The empty image lost its name to the rebuilt one: remove it too, not leave it dangling.
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(stale_id)


def test_a_build_step_reports_its_output_line_by_line_and_fails_with_its_last_lines():
    """What a background build shows while debootstrap runs (``image.build_offline``'s ``progress``)."""
    from apps.sandboxing.image import _run_reporting_lines

    heard = []
    _run_reporting_lines(["sh", "-c", "echo I: Retrieving; echo I: Validating >&2"], heard.append, timeout=30, what="x")
    assert heard == ["I: Retrieving", "I: Validating"]
    with pytest.raises(RuntimeError, match=r"debootstrap failed \(3\): E: no such package"):
        _run_reporting_lines(
            ["sh", "-c", "echo E: no such package; exit 3"], heard.append, timeout=30, what="debootstrap"
        )
