"""The self-check canary: runs in the sandbox as an ordinary program and reports what it can see and do.

``selfcheck`` delivers this file's source as the program's code and reads the JSON it prints; every
fact is something the policy must deny (root, capabilities, a writable root filesystem, a network
interface, raw sockets, the Docker socket) or apply (seccomp, no-new-privileges, the pids limit: a
cgroup under runc, RLIMIT_NPROC under gVisor). It probes by trying, so it must only ever run inside a sandbox.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket

STATUS_KEYS = ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp")
PIDS_MAX_FILES = ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def process_status() -> dict[str, str]:
    with open("/proc/self/status") as status:
        lines = status.read().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines) if value}


PR_GET_NO_NEW_PRIVS = 39


def no_new_privs(status: dict[str, str]) -> str:
    """``NoNewPrivs`` from /proc/self/status, or from prctl where the kernel (gVisor) omits that line."""
    if "NoNewPrivs" in status:
        return status["NoNewPrivs"]
    return str(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0))


def root_writable() -> bool:
    try:
        with open("/etc/crucible-canary", "w"):
            return True
    except OSError:
        return False


def packet_socket_opens() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        return True
    except OSError:
        return False


def pids_max() -> str | None:
    for path in PIDS_MAX_FILES:
        try:
            with open(path) as limit:
                return limit.read().strip()
        except OSError:
            continue
    return None


def network_interfaces(class_dir: str = "/sys/class/net", dev_file: str = "/proc/net/dev") -> list[str] | None:
    """The network interfaces the sandbox sees: /sys/class/net's entries, else (gVisor from 2023 on
    has no /sys/class/net) the names /proc/net/dev lists; None when neither can be read."""
    if os.path.isdir(class_dir):
        return sorted(os.listdir(class_dir))
    try:
        with open(dev_file) as dev:
            lines = dev.read().splitlines()[2:]  # two lines of headers
    except OSError:
        return None
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def facts() -> dict:
    status = process_status()
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        **{key: status.get(key, "") for key in STATUS_KEYS},
        "NoNewPrivs": no_new_privs(status),
        "root_writable": root_writable(),
        "interfaces": network_interfaces(),
        "packet_socket": packet_socket_opens(),
        "pids_max": pids_max(),
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "docker_sock": any(os.path.exists(path) for path in DOCKER_SOCKETS),
    }


if __name__ == "__main__":
    print(json.dumps(facts()))
