"""Build Crucible's platform image with no container registry: ``make image`` runs this.

Three steps, each skipped when its result already exists, so a second run only rebuilds what changed:

1. **Base** (``crucible-platform-base:<recipe hash>``): a minimal Debian rootfs debootstrapped from the
   machine's own Debian mirror (the one apt uses; never written into the repository) and turned into
   an image with ``docker import``, as the sandbox image is (apps/sandboxing/image.py). No
   ``docker pull``. Skipped when the tag exists.
2. **Wheelhouse** (``build/wheelhouse/``): every runtime requirement of requirements.txt as a wheel,
   fetched and built on the host by the host's own pip (containers here cannot verify TLS to the
   package registries; the host can). Skipped when the stamp file says the same requirements were
   already fetched for the same base.
3. **Image** (``crucible:<content hash>`` and ``crucible:latest`` by default): ``docker build`` of the
   top-level Dockerfile ``FROM`` the base, installing only from the wheelhouse (``pip --no-index``).
   The tag is a hash of everything the build reads, so an unchanged tree is not built again; when
   something did change, docker's layer cache keeps the dependency layers.

Run it with the project's venv: ``.venv/bin/python deploy/build_image.py [--tag crucible:latest]``.
It needs root (debootstrap) and a Docker engine. It imports nothing from Django, so it works before
any configuration exists. The last line it prints is the image reference it built or reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.sandboxing.apt_sources import debian_codename, debian_mirror, read_sources  # noqa: E402

BUILD_DIR = ROOT / "build"
WHEELHOUSE = BUILD_DIR / "wheelhouse"
REQUIREMENTS = BUILD_DIR / "requirements-image.txt"
WHEELHOUSE_STAMP = WHEELHOUSE / ".crucible-stamp.json"
BASE_REPOSITORY = "crucible-platform-base"
DEFAULT_REPOSITORY = "crucible"
# What the platform needs from Debian at run time: the interpreter and venv (pip comes from ensurepip's
# bundled wheel), CA certificates (outbound HTTPS: OAuth, callbacks), libseccomp (pyseccomp loads it to
# build the sandboxes' seccomp filters), tzdata (zone names). Everything else arrives as wheels
# (psycopg[binary] and cryptography carry their own libpq and OpenSSL).
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libseccomp2", "tzdata")
# Removed from the base rootfs: package manager state, caches and docs the image never needs.
BASE_REMOVE = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf/templates.dat-old",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
MAX_MISSING_ROUNDS = 10  # requirements the base resolves differently from the host (markers)
BASE_RECIPE_VERSION = 1  # bump when the steps of build_base change in a way the hash cannot see
# requirements.txt sections the image leaves out (tests, linters, the browser driver).
DEV_SECTION = "# Development and tests"
# The files and folders a build reads (the Dockerfile's COPY lines and .dockerignore); their content
# makes the image tag, so a change anywhere here builds a new image and nothing else does.
IMAGE_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "manage.py",
    "apps",
    "crucible",
    "templates",
    "static",
    "deploy/entrypoint.sh",
)
IGNORED_PARTS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}


def log(message: str) -> None:
    print(f"[image] {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``, raising with its output's tail when it fails (so the caller sees why)."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} … failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def image_exists(reference: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", reference], capture_output=True).returncode == 0


# --- 1. the base --------------------------------------------------------------------------------


def base_recipe_hash(codename: str) -> str:
    recipe = {
        "version": BASE_RECIPE_VERSION,
        "codename": codename,
        "packages": BASE_PACKAGES,
        "remove": BASE_REMOVE,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def build_base() -> str:
    """The base image's reference, debootstrapped and imported unless its tag already exists."""
    codename = debian_codename()
    reference = f"{BASE_REPOSITORY}:{base_recipe_hash(codename)}"
    if image_exists(reference):
        log(f"base {reference} exists; reused")
        run(["docker", "tag", reference, f"{BASE_REPOSITORY}:latest"])
        return reference
    mirror = debian_mirror(codename, read_sources())
    log(f"base {reference}: debootstrap {codename} from the host's mirror")
    with tempfile.TemporaryDirectory(prefix="crucible-platform-rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                codename,
                str(rootfs),
                mirror,
            ],
            timeout=1800,
        )
        for relative in BASE_REMOVE:
            target = rootfs / relative
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
        tarball = Path(work) / "rootfs.tar"
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."])
        repository, _, tag = reference.partition(":")
        run(
            [
                "docker",
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
                "--change",
                f"LABEL org.crucible.platform-base.recipe={tag}",
                "--change",
                'CMD ["/bin/bash"]',
                str(tarball),
                reference,
            ],
            timeout=600,
        )
    # Also the Dockerfile's default BASE, so a plain `docker build .` works after one `make image`.
    run(["docker", "tag", reference, f"{BASE_REPOSITORY}:latest"])
    return reference


# --- 2. the wheelhouse --------------------------------------------------------------------------


def runtime_requirements() -> str:
    """requirements.txt without its development section (tests, linters, the browser driver).

    Every other section stays: the HumanEval packages are needed by ``manage.py import_tasks humaneval``.
    """
    lines, skipping = [], False
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith("#"):
            skipping = line.strip() == DEV_SECTION
        if not skipping:
            lines.append(line)
    return "\n".join(lines).strip() + "\n"


def host_pip(*argv: str) -> None:
    run([sys.executable, "-m", "pip", *argv], timeout=1800)


def missing_in_base(base: str) -> str | None:
    """The first requirement the base's own pip cannot satisfy from the wheelhouse alone, or None.

    The host resolves with its own interpreter's environment markers, the base with its own (e.g.
    redis needs async-timeout only below Python 3.11.3): this asks the base itself, with no network.
    """
    result = subprocess.run(
        [
            "docker", "run", "--rm", "--network", "none",
            "--volume", f"{BUILD_DIR}:/build:ro",
            base,
            "sh", "-c",
            "python3 -m venv /tmp/venv && /tmp/venv/bin/pip install --dry-run --no-index --quiet "
            "--find-links /build/wheelhouse --requirement /build/requirements-image.txt",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if result.returncode == 0:
        return None
    for line in result.stderr.splitlines():
        if "No matching distribution found for " in line:
            return line.split("No matching distribution found for ", 1)[1].split(";")[0].strip()
    raise RuntimeError(f"the base cannot install the wheelhouse:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def build_wheelhouse(base: str) -> None:
    """Every runtime requirement as a wheel in build/wheelhouse, fetched by the host's pip, checked by the base's."""
    requirements = runtime_requirements()
    stamp = {"requirements": hashlib.sha256(requirements.encode()).hexdigest(), "base": base}
    BUILD_DIR.mkdir(exist_ok=True)
    REQUIREMENTS.write_text(requirements)
    if WHEELHOUSE_STAMP.is_file() and json.loads(WHEELHOUSE_STAMP.read_text()) == stamp:
        log("wheelhouse is current; reused")
        return
    if WHEELHOUSE.exists():
        shutil.rmtree(WHEELHOUSE)
    WHEELHOUSE.mkdir(parents=True)
    log("wheelhouse: pip wheel on the host")
    # Wheels are built for the host's interpreter; the base's python3 must be the same minor version
    # (check_python_versions), but a patch-level marker can still differ: the base's pip says what it misses.
    host_pip("wheel", "--wheel-dir", str(WHEELHOUSE), "--requirement", str(REQUIREMENTS))
    for _ in range(MAX_MISSING_ROUNDS):
        missing = missing_in_base(base)
        if missing is None:
            break
        log(f"wheelhouse: the base also needs {missing}")
        host_pip("wheel", "--wheel-dir", str(WHEELHOUSE), "--find-links", str(WHEELHOUSE), missing)
    else:
        raise RuntimeError(f"the base still misses wheels after {MAX_MISSING_ROUNDS} rounds")
    WHEELHOUSE_STAMP.write_text(json.dumps(stamp))


def check_python_versions(base: str) -> None:
    """Fail early (not halfway through pip) when the host's and the base's Python differ."""
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            base,
            "python3",
            "-c",
            "import sys; print(*sys.version_info[:2], sep='.')",
        ]
    )
    if result.stdout.strip() != host:
        raise RuntimeError(
            f"the host's Python is {host} but the base image has {result.stdout.strip()}: wheels built here would "
            f"not install there; run this with a {result.stdout.strip()} venv"
        )


# --- 3. the image -------------------------------------------------------------------------------


def content_hash(base: str) -> str:
    """A hash of everything the build reads: the base, the wheelhouse's requirements and the tree."""
    digest = hashlib.sha256()
    digest.update(base.encode())
    digest.update(REQUIREMENTS.read_bytes())
    for name in IMAGE_INPUTS:
        top = ROOT / name
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in paths:
            relative = path.relative_to(ROOT)
            if IGNORED_PARTS & set(relative.parts) or path.suffix == ".pyc":
                continue
            digest.update(str(relative).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_image(base: str, tag: str) -> str:
    """``docker build`` FROM the base unless an image of this exact content exists; tags it ``tag``."""
    versioned = f"{DEFAULT_REPOSITORY}:{content_hash(base)}"
    if image_exists(versioned):
        log(f"image {versioned} exists; reused")
    else:
        log(f"image {versioned}: docker build")
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the classic builder: no buildx plugin needed
        result = subprocess.run(
            ["docker", "build", "--pull=false", "--build-arg", f"BASE={base}", "--tag", versioned, str(ROOT)],
            env=env,
            text=True,
            capture_output=True,
            timeout=1800,
        )
        if result.returncode != 0:
            raise RuntimeError(f"docker build failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    if tag != versioned:
        run(["docker", "tag", versioned, tag])
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=f"{DEFAULT_REPOSITORY}:latest", help="also tag the image so")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        base = build_base()
        check_python_versions(base)
        build_wheelhouse(base)
        reference = build_image(base, args.tag)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"[image] FAILED: {exc}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - started:.1f} s")
    print(reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
