"""The sandbox's seccomp profile (``sandbox/seccomp.json``) compiled to a classic BPF program.

Under runc the engine applies the profile to every process of the container. runsc applies it to
the container's main process only (``--oci-seccomp``), not to programs started by exec, so under
gVisor the launcher's child installs this same filter on itself just before it ``execve``s the program
(with no-new-privileges): every program then runs under the profile, whichever the runtime.
Compiled on the host by libseccomp (``pyseccomp``) once per process, for the host's architecture
and the sub-architectures the profile lists; the launcher only hands the bytes to the kernel.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache

import pyseccomp

from apps.sandboxing.policy import SECCOMP_PATH

_ACTIONS = {"SCMP_ACT_ALLOW": pyseccomp.ALLOW}
_OPS = {
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}
_ARCHES = {"SCMP_ARCH_X86": "X86", "SCMP_ARCH_X32": "X32", "SCMP_ARCH_ARM": "ARM"}


def _action(name: str, errno_ret: int | None):
    if name == "SCMP_ACT_ERRNO":
        return pyseccomp.ERRNO(1 if errno_ret is None else errno_ret)
    if name not in _ACTIONS:
        raise ValueError(f"unsupported seccomp action {name}")
    return _ACTIONS[name]


def _args(rule: dict) -> list:
    return [
        pyseccomp.Arg(arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0))
        for arg in rule.get("args") or []
    ]


def _sub_architectures(profile: dict) -> list[str]:
    native = pyseccomp.system_arch()
    for entry in profile.get("archMap") or []:
        if getattr(pyseccomp.Arch, entry["architecture"].removeprefix("SCMP_ARCH_"), None) == native:
            return [_ARCHES[sub] for sub in entry.get("subArchitectures", []) if sub in _ARCHES]
    return []


def compile_profile(profile: dict) -> bytes:
    """``profile`` (the engine's seccomp JSON format) as BPF for this host; raises ``ValueError``."""
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    bpf_filter = pyseccomp.SyscallFilter(default)
    for arch in _sub_architectures(profile):
        bpf_filter.add_arch(getattr(pyseccomp.Arch, arch))
    for rule in profile["syscalls"]:
        action = _action(rule["action"], rule.get("errnoRet"))
        for name in rule["names"]:
            try:
                pyseccomp.resolve_syscall(pyseccomp.system_arch(), name)
            except (ValueError, OSError):
                continue  # not a system call of this architecture
            bpf_filter.add_rule(action, name, *_args(rule))
    with tempfile.TemporaryFile() as out:
        bpf_filter.export_bpf(out)
        out.seek(0)
        return out.read()


@lru_cache(maxsize=1)
def program() -> bytes:
    """The sandbox profile as BPF (compiled once per process)."""
    return compile_profile(json.loads(SECCOMP_PATH.read_text()))
