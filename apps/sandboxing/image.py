"""Build the sandbox image: a minimal Debian with python3 and bash, a non-root user, nothing setuid,
and the static in-sandbox helper (``helper.HELPER_PATH``, compiled here from ``sandbox/helper``).

Two ways, one result:
- offline (default; no registry needed): debootstrap a minbase rootfs from the machine's own
  Debian mirror, strip it, ``docker import`` it;
- ``sandbox/Dockerfile`` for operators who can pull ``debian:bookworm-slim``.

The tag is content-derived: a hash of the recipe below, so a changed recipe builds a new image
and an unchanged one is reused. ``SANDBOX_IMAGE`` (default ``crucible-sandbox:latest``) points at
the newest build; every evaluation records the image ID it actually ran on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import docker.errors
from django.conf import settings

from apps.sandboxing import catalog, engine, helper
from apps.sandboxing.apt_sources import debian_codename, debian_mirror, read_sources
from apps.sandboxing.catalog import Definition
from apps.sandboxing.policy import SANDBOX_UID

log = logging.getLogger(__name__)

SANDBOX_DIR = Path(settings.BASE_DIR) / "sandbox"
PACKAGES = ("python3", "bash")
# Paths removed from the rootfs: package manager state and caches, docs, and tools a sandboxed
# program has no business with. dpkg stays (python3 needs nothing from it at run time, but
# removing /var/lib/dpkg breaks nothing either); apt is removed outright.
REMOVE = (
    "var/cache/apt",
    "var/lib/apt",
    "var/cache/debconf",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/bin/apt",
    "usr/bin/apt-get",
    "usr/bin/apt-cache",
    "usr/bin/apt-config",
    "usr/bin/apt-mark",
    "usr/bin/apt-key",
    "etc/apt",
    "usr/lib/apt",
)
# Removed wherever they match: Debian's sitecustomize (it only tries to import apport's exception hook,
# which no image has) costs every python3 start an import of it and a failed search of sys.path.
REMOVE_MATCHING = ("etc/python3*/sitecustomize.py", "usr/lib/python3*/sitecustomize.py")
RECIPE_VERSION = 2  # bump when the build steps below change in a way the hash cannot see
# (the version labels are metadata, left out on purpose: an image built before them lists no versions)
REPOSITORY = "crucible-sandbox"
RECIPE_LABEL = "org.crucible.sandbox.recipe"
HELPER_LABEL = "org.crucible.helper"  # helper.digest() of the helper the image carries
COMPILER = "gcc"


class BuildPhase(StrEnum):
    """The steps of an offline build, in order, as a build's progress reports them."""

    WAITING = "waiting"  # requested, no builder has taken it yet
    DEBOOTSTRAP = "debootstrap"  # the root file system from the Debian mirror (packages included)
    STRIP = "strip"  # caches, docs, apt and setuid bits removed; the sandbox user added
    VERSIONS = "versions"  # the version command run in the root file system
    IMPORT = "import"  # tar and ``docker import``
    DONE = "done"


# What a build reports as it goes: the phase it is in, and a line of its log ("" for none).
Progress = Callable[[BuildPhase, str], None]


def _no_progress(_phase: BuildPhase, _line: str) -> None:
    return None


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    image_id: str
    built: bool


def recipe_hash(codename: str, packages: tuple[str, ...] = PACKAGES) -> str:
    recipe = {
        "version": RECIPE_VERSION,
        "codename": codename,
        "packages": packages,
        "remove": REMOVE,
        "remove_matching": REMOVE_MATCHING,
        "uid": SANDBOX_UID,
        "helper": helper.digest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def find_image(reference: str):
    try:
        return engine.client().images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def current_image(reference: str):
    """The image ``reference`` when it carries this checkout's helper, else None: an image built before
    the helper (or with an older one) cannot run programs the way the host starts them."""
    found = find_image(reference)
    if found is None:
        return None
    labels = found.attrs.get("Config", {}).get("Labels") or {}
    return found if labels.get(HELPER_LABEL) == helper.digest() else None


def compile_helper(destination: Path) -> Path:
    """Compile the in-sandbox helper (``sandbox/helper/crucible-helper.c``) to ``destination``, a static
    binary that needs nothing from the image it runs in; raises ``RuntimeError`` when gcc fails."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    command = [COMPILER, *helper.COMPILE_FLAGS, "-o", str(destination), str(helper.SOURCE_PATH)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except OSError as exc:
        raise RuntimeError(f"cannot compile the sandbox helper ({exc}): scripts/setup.sh installs gcc") from exc
    if result.returncode != 0:
        raise RuntimeError(f"compiling the sandbox helper failed: {result.stderr[-2000:]}")
    return destination


def install_helper(rootfs: Path) -> None:
    """Put the helper into a root file system at ``helper.HELPER_PATH``: root-owned, mode 0755."""
    target = rootfs / helper.HELPER_PATH.lstrip("/")
    compile_helper(target)
    for path in (target, *[p for p in target.parents if p.is_relative_to(rootfs) and p != rootfs]):
        os.chown(path, 0, 0, follow_symlinks=False)
    target.chmod(0o755)
    _install_prestart(rootfs)


def _install_prestart(rootfs: Path) -> None:
    """Put the hook of serve's interpreter started ahead (``helper.PRESTART_FILES``) where the image's
    python3 looks for .pth files, when it has Debian's python3: root-owned, mode 0644."""
    directory = rootfs / helper.PRESTART_DIR.lstrip("/")
    if not directory.is_dir() or directory.is_symlink():
        return
    for source in helper.PRESTART_FILES:
        target = directory / source.name
        shutil.copyfile(source, target)
        os.chown(target, 0, 0, follow_symlinks=False)
        target.chmod(0o644)


def _strip_rootfs(rootfs: Path) -> None:
    for relative in REMOVE:
        target = rootfs / relative
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
    for pattern in REMOVE_MATCHING:
        for target in rootfs.glob(pattern):
            target.unlink()
    # No setuid/setgid file may remain (no-new-privileges also neuters them; this is belt and braces).
    for directory, _dirs, files in os.walk(rootfs):
        for name in files:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    with open(rootfs / "etc/passwd", "a") as passwd:
        passwd.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/tmp:/bin/bash\n")
    with open(rootfs / "etc/group", "a") as group:
        group.write(f"sandbox:x:{SANDBOX_UID}:\n")
    for mountpoint in ("output", "sandbox", "tmp"):
        (rootfs / mountpoint).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)


def _debootstrap(
    rootfs: Path,
    codename: str,
    mirror: str,
    packages: tuple[str, ...] = PACKAGES,
    on_line: Callable[[str], None] | None = None,
) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(packages)}",
        "--exclude=apt",
        codename,
        str(rootfs),
        mirror,
    ]
    log.info("running %s", " ".join(command))
    if on_line is not None:
        _run_reporting_lines(command, on_line, timeout=1800, what="debootstrap")
        return
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")


def _run_reporting_lines(command: list[str], on_line: Callable[[str], None], *, timeout: float, what: str) -> None:
    """Run ``command`` with its output (both streams) handed to ``on_line`` line by line as it comes,
    so a long step shows progress; raises with the output's last lines when it fails."""
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                tail = [*tail[-19:], line]
                on_line(line)
            returncode = process.wait()
        except BaseException:
            process.kill()  # the build was cut short (its job's time limit): leave nothing running
            raise
        finally:
            timer.cancel()
    if returncode != 0:
        raise RuntimeError(f"{what} failed ({returncode}): " + "\n".join(tail)[-2000:])


def build_offline(
    reference: str = "",
    *,
    packages: tuple[str, ...] = PACKAGES,
    repository: str = REPOSITORY,
    versions: dict[str, tuple[str, ...]] | None = None,
    version_package: str = "",
    progress: Progress = _no_progress,
) -> BuiltImage:
    """Build (or reuse) the image of ``packages`` from the Debian mirror and tag it ``reference``.

    The sandbox image is the default; a runtime's image (``catalog.Definition``) passes its own
    packages (the base's plus its language's) and repository. ``versions`` (runtime name: version
    command) are run in the finished root file system, as the sandbox user, and their answers kept
    as image labels (``version_label``), so listing runtimes never starts a container. ``progress``
    hears each phase as it starts and debootstrap's output line by line (``BuildPhase``).
    """
    versions = versions if versions is not None else _base_versions()
    codename = debian_codename()
    tag = recipe_hash(codename, packages)
    versioned = f"{repository}:{tag}"
    reference = reference or settings.SANDBOX_IMAGE
    existing = find_image(versioned)
    if existing is None:
        mirror = debian_mirror(codename, read_sources())
        with tempfile.TemporaryDirectory(prefix="crucible-rootfs-") as work:
            rootfs = Path(work) / "rootfs"
            progress(BuildPhase.DEBOOTSTRAP, "")
            _debootstrap(rootfs, codename, mirror, packages, lambda line: progress(BuildPhase.DEBOOTSTRAP, line))
            progress(BuildPhase.STRIP, "")
            _strip_rootfs(rootfs)
            install_helper(rootfs)
            progress(BuildPhase.VERSIONS, "")
            labels = {
                version_label(name): _version_in(rootfs, command) or _package_version(rootfs, version_package)
                for name, command in versions.items()
            }
            tarball = Path(work) / "rootfs.tar"
            progress(BuildPhase.IMPORT, "")
            subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            changes = [
                f"USER {SANDBOX_UID}:{SANDBOX_UID}",
                "WORKDIR /tmp",
                "ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
                f"LABEL {RECIPE_LABEL}={tag}",
                f"LABEL {HELPER_LABEL}={helper.digest()}",
                *(f"LABEL {key}={json.dumps(value)}" for key, value in labels.items() if value),
                'CMD ["/bin/bash"]',
            ]
            engine.client().api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=changes)
        existing = find_image(versioned)
        built = True
    else:
        built = False
    name, _, version = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "latest")
    existing.tag(name, version)
    return BuiltImage(reference=reference, image_id=existing.id, built=built)


def build_runtime(definition: Definition, progress: Progress = _no_progress) -> BuiltImage:
    """Build (or reuse) the image of a runtime with packages of its own, tagged ``definition.image``."""
    if not definition.own_image:
        return build_offline(progress=progress)
    packages = tuple(dict.fromkeys((*PACKAGES, *definition.packages)))
    return build_offline(
        definition.image,
        packages=packages,
        repository=definition.repository,
        versions={definition.name: definition.version},
        version_package=definition.packages[0],
        progress=progress,
    )


def version_label(runtime_name: str) -> str:
    return f"org.crucible.runtime.{runtime_name}.version"


def _base_versions() -> dict[str, tuple[str, ...]]:
    """The version commands of the runtimes that run on the sandbox image itself."""
    return {name: d.version for name, d in catalog.definitions().items() if not d.own_image}


def _version_in(rootfs: Path, command: tuple[str, ...]) -> str:
    """What ``command`` prints (its first line, short) in the built root file system; "" when it fails."""
    try:
        result = subprocess.run(
            [
                "chroot",
                f"--userspec={SANDBOX_UID}:{SANDBOX_UID}",
                str(rootfs),
                "/usr/bin/env",
                "-i",
                "PATH=/usr/bin:/bin",
                "HOME=/tmp",
                "LANG=C.UTF-8",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (result.stdout.strip() or result.stderr.strip()).splitlines()
    return lines[0][:120] if result.returncode == 0 and lines else ""


def _package_version(rootfs: Path, package: str) -> str:
    """The Debian version of ``package`` in the built root file system (for a version command that
    cannot run in a bare chroot, e.g. a JVM, which needs /proc); "" when it is not recorded."""
    status = rootfs / "var/lib/dpkg/status"
    if not package or not status.is_file():
        return ""
    for stanza in status.read_text(errors="replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") == package:
            return f"{package} {fields.get('Version', '')}".strip()
    return ""


def image_versions(reference: str) -> dict[str, str] | None:
    """The runtime versions an image's labels record (runtime name: version); None when it is absent
    (or predates this checkout's helper: it must be built again)."""
    found = current_image(reference)
    if found is None:
        return None
    labels = found.attrs.get("Config", {}).get("Labels") or {}
    prefix, suffix = "org.crucible.runtime.", ".version"
    return {
        key[len(prefix) : -len(suffix)]: value
        for key, value in labels.items()
        if key.startswith(prefix) and key.endswith(suffix)
    }


def build_from_dockerfile(reference: str = "") -> BuiltImage:
    reference = reference or settings.SANDBOX_IMAGE
    image, _logs = engine.client().images.build(
        path=str(SANDBOX_DIR),
        tag=reference,
        rm=True,
        pull=True,
        buildargs={"HELPER_DIGEST": helper.digest()},
    )
    return BuiltImage(reference=reference, image_id=image.id, built=True)
