"""Build the sandbox image: a minimal Debian with python3 and bash, a non-root user, nothing setuid.

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
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from django.conf import settings

from apps.sandboxing import engine
from apps.sandboxing.apt_sources import debian_codename, debian_mirror, read_sources
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
RECIPE_VERSION = 2  # bump when the build steps below change in a way the hash cannot see
REPOSITORY = "crucible-sandbox"


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    image_id: str
    built: bool


def recipe_hash(codename: str) -> str:
    recipe = {
        "version": RECIPE_VERSION,
        "codename": codename,
        "packages": PACKAGES,
        "remove": REMOVE,
        "uid": SANDBOX_UID,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def find_image(reference: str):
    try:
        return engine.client().images.get(reference)
    except docker.errors.ImageNotFound:
        return None


def _strip_rootfs(rootfs: Path) -> None:
    for relative in REMOVE:
        target = rootfs / relative
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
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


def _debootstrap(rootfs: Path, codename: str, mirror: str) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        "--exclude=apt",
        codename,
        str(rootfs),
        mirror,
    ]
    log.info("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")


def build_offline(reference: str = "") -> BuiltImage:
    codename = debian_codename()
    tag = recipe_hash(codename)
    versioned = f"{REPOSITORY}:{tag}"
    reference = reference or settings.SANDBOX_IMAGE
    existing = find_image(versioned)
    if existing is None:
        mirror = debian_mirror(codename, read_sources())
        with tempfile.TemporaryDirectory(prefix="crucible-rootfs-") as work:
            rootfs = Path(work) / "rootfs"
            _debootstrap(rootfs, codename, mirror)
            _strip_rootfs(rootfs)
            tarball = Path(work) / "rootfs.tar"
            subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
            changes = [
                f"USER {SANDBOX_UID}:{SANDBOX_UID}",
                "WORKDIR /tmp",
                "ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1",
                f"LABEL org.crucible.sandbox.recipe={tag}",
                'CMD ["/bin/bash"]',
            ]
            repository, _, version = versioned.partition(":")
            engine.client().api.import_image_from_file(
                str(tarball), repository=repository, tag=version, changes=changes
            )
        existing = find_image(versioned)
        built = True
    else:
        built = False
    repository, _, version = reference.rpartition(":") if ":" in reference.split("/")[-1] else (reference, "", "latest")
    existing.tag(repository, version)
    return BuiltImage(reference=reference, image_id=existing.id, built=built)


def build_from_dockerfile(reference: str = "") -> BuiltImage:
    reference = reference or settings.SANDBOX_IMAGE
    image, _logs = engine.client().images.build(path=str(SANDBOX_DIR), tag=reference, rm=True, pull=True)
    return BuiltImage(reference=reference, image_id=image.id, built=True)
