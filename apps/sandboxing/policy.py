"""Run policy: the limits of one run, the runtime it runs with, and the container that enforces them.

``Limits.from_settings`` takes the operator's defaults and lets a caller ask for less (or up to the
operator's maximum) of time, memory and CPUs, never more; ``MINIMA`` is the one definition of the
smallest values a caller may ask for. ``container_config`` turns a ``Profile`` (image, engine
runtime, limits) into the keyword arguments of ``containers.create``: a container that is locked
down with no opt-out. A ``Profile`` is hashable, so pre-started sandboxes can be kept per profile.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from docker.types import LogConfig, Ulimit

from apps.sandboxing import engine_runtime, helper

MIB = 1024 * 1024
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
# Program N of several in one sandbox, for a compiled runtime: "pN/" and the runtime's file name.
_PROGRAM_FILE_NAME = re.compile(r"^p[0-9]{1,6}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")

SANDBOX_UID = 10001
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
CODE_DIR = "/sandbox"
OUTPUT_DIR = "/output"
WORK_DIR = "/tmp"
BUILD_DIR = "/build"  # a compiled runtime's build output: the one exec-allowed place of a run
SHM_DIR = "/dev/shm"  # the engine's shared-memory tmpfs (``shm_size``)
# The whole environment of a sandboxed program: nothing from the host, nothing from the image.
ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "CRUCIBLE_OUTPUT_DIR": OUTPUT_DIR,
}
LABEL_INSTANCE = "org.crucible.instance"
LABEL_RUN = "org.crucible.run"
LABEL_POOL = "org.crucible.pool"  # the worker whose warm pool started the container
LABEL_PROFILE = "org.crucible.profile"  # Profile.key of a pool container
SECCOMP_PATH = Path(settings.BASE_DIR) / "sandbox" / "seccomp.json"
CODE_DIR_INODES = 128  # a task of 50 tests in a compiled runtime: a directory and a file each
SHM_MAX_MB = 64
# The engine refuses a memory limit under 6 MB; below what a caller may ask for (MINIMA).
ENGINE_MINIMUM_MEMORY_MB = 6

# Under runc, /proc files that measure or identify the host (and so other users' runs) read empty,
# on top of the engine's own masked paths. gVisor presents its own per-sandbox versions of these.
MASKED_PATHS = [
    # the engine's defaults
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    # the host's identity and load
    "/proc/sys/kernel/random/boot_id",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/meminfo",
    "/proc/diskstats",
    "/proc/vmstat",
    "/proc/swaps",
    "/proc/interrupts",
]
# With no network, a resolver address is only the host's network layout: name none that is real.
RESOLVER = "127.0.0.1"
# POSIX message queues: the engine mounts them writable; the seccomp profile refuses mq_* calls,
# and this read-only mount replaces the engine's.
MQUEUE_DIR = "/dev/mqueue"

# The idle main process (the helper's ``idle``): SIGTERM ignored, so a cancel's SIGTERM to every
# process reaches the program but not the process that keeps the container alive.
IDLE_COMMAND = helper.IDLE_COMMAND
AWAIT_COMMAND = helper.AWAIT_COMMAND


@dataclass(frozen=True)
class Bounds:
    """Time, memory and CPUs of one run: the smallest a caller may ask for, or an operator's maximum."""

    timeout_s: float
    memory_mb: int
    cpus: float


MINIMA = Bounds(timeout_s=0.1, memory_mb=16, cpus=0.1)


def maxima() -> Bounds:
    """The operator's maxima (settings may change in tests, so read them each time)."""
    return Bounds(
        timeout_s=settings.SANDBOX_MAX_TIMEOUT_S,
        memory_mb=settings.SANDBOX_MAX_MEMORY_MB,
        cpus=settings.SANDBOX_MAX_CPUS,
    )


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int
    cpus: float
    pids: int
    output_cap_bytes: int
    tmpfs_mb: int
    tmpfs_inodes: int
    nofile: int
    fsize_mb: int
    artifact_max_files: int
    artifact_max_bytes: int
    kill_grace_s: float

    def __post_init__(self) -> None:
        checks = {
            "timeout_s": self.timeout_s > 0 and math.isfinite(self.timeout_s),
            "memory_mb": self.memory_mb >= ENGINE_MINIMUM_MEMORY_MB,
            "cpus": self.cpus > 0 and math.isfinite(self.cpus),
            "pids": self.pids >= 8,
            "output_cap_bytes": self.output_cap_bytes >= 0,
            "tmpfs_mb": self.tmpfs_mb >= 1,
            "tmpfs_inodes": self.tmpfs_inodes >= 16,
            "nofile": self.nofile >= 16,
            "fsize_mb": self.fsize_mb >= 1,
            "artifact_max_files": self.artifact_max_files >= 0,
            "artifact_max_bytes": self.artifact_max_bytes >= 0,
            "kill_grace_s": self.kill_grace_s >= 0 and math.isfinite(self.kill_grace_s),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid sandbox limits: {', '.join(bad)}")

    @classmethod
    def from_settings(cls, *, timeout_s: float | None = None, memory_mb: int | None = None, cpus: float | None = None):
        """Operator defaults; ``timeout_s``/``memory_mb``/``cpus`` may ask for a value in [MINIMA, maxima()].

        Raises ``ValueError`` (naming the field) when a requested value is out of range.
        """
        most = maxima()
        timeout = settings.SANDBOX_DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        memory = settings.SANDBOX_DEFAULT_MEMORY_MB if memory_mb is None else int(memory_mb)
        cpu = settings.SANDBOX_DEFAULT_CPUS if cpus is None else float(cpus)
        if not (MINIMA.timeout_s <= timeout <= most.timeout_s):
            raise ValueError(f"timeout_s must be in [{MINIMA.timeout_s:g}, {most.timeout_s:g}]")
        if not (MINIMA.memory_mb <= memory <= most.memory_mb):
            raise ValueError(f"memory_mb must be in [{MINIMA.memory_mb}, {most.memory_mb}]")
        if not (MINIMA.cpus <= cpu <= most.cpus):
            raise ValueError(f"cpus must be in [{MINIMA.cpus:g}, {most.cpus:g}]")
        return cls(
            timeout_s=timeout,
            memory_mb=memory,
            cpus=cpu,
            pids=settings.SANDBOX_PIDS_LIMIT,
            output_cap_bytes=settings.SANDBOX_OUTPUT_CAP_BYTES,
            tmpfs_mb=settings.SANDBOX_TMPFS_MB,
            tmpfs_inodes=settings.SANDBOX_TMPFS_INODES,
            nofile=settings.SANDBOX_NOFILE,
            fsize_mb=settings.SANDBOX_FSIZE_MB,
            artifact_max_files=settings.SANDBOX_ARTIFACT_MAX_FILES,
            artifact_max_bytes=settings.SANDBOX_ARTIFACT_MAX_BYTES,
            kill_grace_s=settings.SANDBOX_KILL_GRACE_S,
        )


@dataclass(frozen=True)
class Runtime:
    image: str
    command: list[str]  # argv; "{file}" is replaced by the code file's path, "{build}" by BUILD_DIR
    file_name: str
    # A compiled runtime's compile step (same placeholders), run before ``command`` in the same
    # sandbox, with its own wall-clock limit; its output is reported as the program's stderr.
    compile_command: list[str] = field(default_factory=list)
    compile_timeout_s: float = 30.0
    # The compile step's memory limit, whatever the program's: a compiler often needs more than the
    # program it builds (the sandbox is created with the larger, then set to the program's to run it).
    compile_memory_mb: int = 512
    # The runtime's own platform variables (e.g. a compiler's cache directory), on top of ENVIRONMENT.
    environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _FILE_NAME.match(self.file_name) and not _PROGRAM_FILE_NAME.match(self.file_name):
            raise ValueError("file_name must be a plain file name")
        for name, argv in (("command", self.command), ("compile_command", self.compile_command or ["-"])):
            if not argv or not all(isinstance(arg, str) and "\0" not in arg for arg in argv):
                raise ValueError(f"{name} must be a non-empty list of strings")
        if not (self.compile_timeout_s > 0 and math.isfinite(self.compile_timeout_s)):
            raise ValueError("compile_timeout_s must be a positive number")
        if not (isinstance(self.compile_memory_mb, int) and self.compile_memory_mb >= ENGINE_MINIMUM_MEMORY_MB):
            raise ValueError(f"compile_memory_mb must be a whole number of at least {ENGINE_MINIMUM_MEMORY_MB}")
        if any(name in ENVIRONMENT or not _ENV_NAME.match(name) for name in self.environment):
            raise ValueError("environment names must be upper-case and may not replace the platform's")

    @property
    def compiled(self) -> bool:
        return bool(self.compile_command)

    def argv(self, code_path: str) -> list[str]:
        return _expand(self.command, code_path)

    def sandbox_limits(self, limits: Limits) -> Limits:
        """The limits the sandbox is created with for a program of this runtime: the program's, with
        room for the compile step's memory when it needs more (``Sandbox.set_memory`` narrows it to
        each step's own)."""
        if not self.compiled or self.compile_memory_mb <= limits.memory_mb:
            return limits
        return replace(limits, memory_mb=self.compile_memory_mb)

    def compile_argv(self, code_path: str) -> list[str]:
        return _expand(self.compile_command, code_path)

    def program_environment(self) -> dict[str, str]:
        """The whole environment of this runtime's programs: the platform's, then the runtime's own."""
        return {**ENVIRONMENT, **self.environment}


def _expand(argv: list[str], code_path: str) -> list[str]:
    return [arg.replace("{file}", code_path).replace("{build}", BUILD_DIR) for arg in argv]


def runtime_for(language: str) -> Runtime:
    """The runtime of a submission language (``python`` or ``bash``) on the configured sandbox image."""
    image = settings.SANDBOX_IMAGE
    if language == "python":
        return Runtime(image=image, command=["python3", "-u", "{file}"], file_name="main.py")
    if language == "bash":
        return Runtime(image=image, command=["bash", "{file}"], file_name="main.sh")
    raise ValueError(f"unknown language: {language!r}")


MAX_ARGS = 64
MAX_ARG_CHARS = 4096
MAX_ENV = 32
MAX_ENV_VALUE_CHARS = 4096
RESERVED_ENV_PREFIXES = ("CRUCIBLE_", "LD_")  # the platform's, and the dynamic loader's
_USER_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def submission_extras_problems(
    runtime: Runtime, files: dict[str, str], args: list[str], env: dict[str, str]
) -> dict[str, str]:
    """What is wrong with a submission's extra ``files``, ``args`` and ``env`` for ``runtime``, by field.

    Files: at most ``SANDBOX_MAX_FILES``, plain names (no directory, no ``..``, no link: the launcher
    creates each as a new regular file), never the entry point's name; their size counts in the code
    limit (checked by the caller). Args: strings without NUL, passed as argv (no shell). Env: names of
    letters, digits and ``_``, never one of the platform's or the runtime's variables nor a reserved prefix.
    """
    problems: dict[str, str] = {}
    if len(files) > settings.SANDBOX_MAX_FILES:
        problems["files"] = f"At most {settings.SANDBOX_MAX_FILES} files besides the entry point."
    for name, content in files.items():
        if not isinstance(name, str) or not _FILE_NAME.match(name) or name in (".", ".."):
            problems["files"] = f"File name {str(name)[:80]!r} is not a plain file name (letters, digits, _ . -)."
        elif name == runtime.file_name:
            problems["files"] = f"{name!r} is the entry point's name: its content is `code`."
        elif not isinstance(content, str) or "\0" in content:
            problems["files"] = f"File {name!r} must be text without NUL characters."
        if "files" in problems:
            break
    if len(args) > MAX_ARGS or any(not isinstance(a, str) or "\0" in a or len(a) > MAX_ARG_CHARS for a in args):
        problems["args"] = f"At most {MAX_ARGS} strings of at most {MAX_ARG_CHARS} characters, without NUL."
    reserved = set(ENVIRONMENT) | set(runtime.environment)
    if len(env) > MAX_ENV:
        problems["env"] = f"At most {MAX_ENV} variables."
    for name, value in env.items():
        if not isinstance(name, str) or not _USER_ENV_NAME.match(name):
            problems["env"] = f"Variable name {str(name)[:80]!r} must be letters, digits and _ (not first a digit)."
        elif name in reserved or name.startswith(RESERVED_ENV_PREFIXES):
            problems["env"] = f"{name} is set by the platform and cannot be changed."
        elif not isinstance(value, str) or "\0" in value or len(value) > MAX_ENV_VALUE_CHARS:
            problems["env"] = f"The value of {name} must be a string of at most {MAX_ENV_VALUE_CHARS} characters."
        if "env" in problems:
            break
    return problems


def _configured_engine_runtime() -> str:
    """``SANDBOX_RUNTIME`` resolved (``auto``: gVisor when the engine has it); may raise ``RuntimeUnknown``."""
    return engine_runtime.chosen()


@dataclass(frozen=True)
class Profile:
    """What a sandbox container is made of: image, engine runtime (``runc``, ``runsc``, ...) and limits.

    Two sandboxes of one profile are interchangeable before a program is delivered to them.
    """

    image: str
    limits: Limits
    engine_runtime: str = field(default_factory=_configured_engine_runtime)
    # A session's sandbox (apps.sessions): /sandbox is its workspace, the working directory,
    # ``limits.tmpfs_mb`` large and the one writable place where files may be executed.
    session: bool = False
    # A compiled runtime's run: a /build tmpfs (the /tmp caps) where the compiler writes what runs.
    build_dir: bool = False

    @property
    def key(self) -> str:
        """A short stable name of what the container is made of (the label a pool container carries):
        image, engine runtime and the limits the engine enforces. The runner's own limits (timeout,
        output and artifact caps, kill grace) are not part of it: they apply to any such sandbox."""
        limits = self.limits
        made_of = (
            self.image,
            self.engine_runtime,
            limits.memory_mb,
            limits.cpus,
            limits.pids,
            limits.tmpfs_mb,
            limits.tmpfs_inodes,
            limits.nofile,
            limits.fsize_mb,
            self.session,
            self.build_dir,
        )
        return hashlib.sha256(repr(made_of).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def seccomp_profile() -> str:
    """The seccomp profile as compact JSON (the engine API takes the profile's content, not a path)."""
    return json.dumps(json.loads(SECCOMP_PATH.read_text()), separators=(",", ":"))


def code_dir_mb() -> int:
    """Size of the /sandbox tmpfs: room for the largest code file and stdin the platform accepts."""
    return (settings.SANDBOX_MAX_CODE_BYTES + settings.SANDBOX_MAX_STDIN_BYTES) // MIB + 2


def _tmpfs(limits: Limits, *, session: bool = False, build_dir: bool = False) -> dict[str, str]:
    owner = f"nosuid,nodev,uid={SANDBOX_UID},gid={SANDBOX_UID}"
    common = f"rw,noexec,{owner}"
    size = f"size={limits.tmpfs_mb}m,nr_inodes={limits.tmpfs_inodes}"
    # A run's /sandbox holds its code and stdin (the interpreter reads them: no exec needed); a
    # session's is the agent's workspace, where it builds and runs its own scripts and binaries.
    code_dir = (
        f"rw,exec,{owner},mode=0755,{size}"
        if session
        else f"{common},mode=0755,size={code_dir_mb()}m,nr_inodes={CODE_DIR_INODES}"
    )
    mounts = {
        WORK_DIR: f"{common},mode=1777,{size}",
        OUTPUT_DIR: f"{common},mode=0755,{size}",
        CODE_DIR: code_dir,
        MQUEUE_DIR: "ro,noexec,nosuid,nodev,mode=0755,size=4k,nr_inodes=16",
    }
    if build_dir:
        # A compiled program must be executed from somewhere: here, and only here (still nosuid,
        # nodev, the sandbox user's, under /tmp's size and inode caps). It adds no power a native
        # program lacks (it can already map its own memory executable); the boundary stays the
        # engine's: no capabilities, seccomp, gVisor.
        mounts[BUILD_DIR] = f"rw,exec,{owner},mode=0755,{size}"
    return mounts


def _ulimits(limits: Limits, *, gvisor: bool) -> list[Ulimit]:
    fsize = limits.fsize_mb * MIB
    ulimits = [
        Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
        Ulimit(name="fsize", soft=fsize, hard=fsize),
        Ulimit(name="core", soft=0, hard=0),
    ]
    if gvisor:
        # gVisor's own kernel counts the sandbox user's processes against RLIMIT_NPROC; it is that
        # sandbox's kernel alone, so the count is per sandbox (under runc it would be host-wide).
        ulimits.append(Ulimit(name="nproc", soft=limits.pids, hard=limits.pids))
    return ulimits


def host_memory_mb(limits: Limits, engine_runtime_name: str) -> int:
    """The engine's memory limit: the program's under runc; under gVisor also room for gVisor's own
    kernel (``SANDBOX_RUNSC_MEMORY_OVERHEAD_MB``), so the program gets about what it asked for."""
    if engine_runtime.is_gvisor(engine_runtime_name):
        return limits.memory_mb + settings.SANDBOX_RUNSC_MEMORY_OVERHEAD_MB
    return limits.memory_mb


def host_pids_limit(limits: Limits, engine_runtime_name: str) -> int:
    """The engine's pids cgroup limit: the program's own limit under runc; under gVisor the host
    threads gVisor itself needs for the sandbox (its kernel and, per process of the program, the
    threads of the ptrace platform), capped by ``SANDBOX_RUNSC_HOST_TASKS``."""
    if engine_runtime.is_gvisor(engine_runtime_name):
        return settings.SANDBOX_RUNSC_HOST_TASKS
    return limits.pids


def container_config(
    profile: Profile, *, name: str, run_id: str, labels: dict[str, str] | None = None, attachable: bool = False
) -> dict:
    """Keyword arguments for ``containers.create``: the sandbox policy, with no opt-out.

    ``attachable``: the main process is the helper's ``await`` with stdin open (its one program may
    come over ``attach``; else it blocks on stdin as ``idle`` would), instead of ``idle``. Closing
    the attached stream closes its stdin (``stdin_once``, a key only then: the SDK's ``containers.create``
    has no argument for it, so ``sandbox._engine_create`` sets it).

    Raises ``OSError``/``ValueError`` when the seccomp profile cannot be loaded.
    """
    limits = profile.limits
    gvisor = engine_runtime.is_gvisor(profile.engine_runtime)
    return {
        "image": profile.image,
        "command": AWAIT_COMMAND if attachable else IDLE_COMMAND,
        "name": name,
        "hostname": "sandbox",
        "user": SANDBOX_USER,
        "working_dir": CODE_DIR if profile.session else WORK_DIR,
        "environment": dict(ENVIRONMENT),
        "labels": {**(labels or {}), LABEL_INSTANCE: settings.CRUCIBLE_INSTANCE, LABEL_RUN: run_id},
        "detach": True,
        "stdin_open": attachable,
        **({"stdin_once": True} if attachable else {}),
        "tty": False,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": _tmpfs(limits, session=profile.session, build_dir=profile.build_dir),
        "shm_size": f"{min(limits.tmpfs_mb, SHM_MAX_MB)}m",
        "ipc_mode": "private",
        "cgroupns": "private",
        "dns": [RESOLVER],
        "masked_paths": list(MASKED_PATHS),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", f"seccomp={seccomp_profile()}"],
        "privileged": False,
        "mem_limit": f"{host_memory_mb(limits, profile.engine_runtime)}m",
        "memswap_limit": f"{host_memory_mb(limits, profile.engine_runtime)}m",
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": host_pids_limit(limits, profile.engine_runtime),
        "oom_score_adj": 1000,
        "ulimits": _ulimits(limits, gvisor=gvisor),
        "runtime": profile.engine_runtime,
        "log_config": LogConfig(type="none"),
        "init": True,
        "auto_remove": False,
        "volumes": {},
        "mounts": [],
    }
