"""Adversarial cases 10-15 (escape and information leaks), at the runner level."""

import json
import os
import platform
from pathlib import Path

import pytest

from apps.sandboxing.tests.conftest import execute, under_gvisor

# /proc/self/status as the tests read it; gVisor's kernel has no NoNewPrivs line, so ask prctl.
READ_STATUS = (
    "import ctypes\n"
    "status = {k: v.strip() for k, v in (l.split(':', 1) for l in open('/proc/self/status').read().splitlines())}\n"
    "status.setdefault('NoNewPrivs', str(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)))\n"
)

pytestmark = pytest.mark.docker


def facts(code: str, **limits) -> dict:
    run = execute(code, **limits)
    assert run.result.outcome == "exited", (run.result, run.stderr)
    return json.loads(run.stdout)


# 10
def test_writing_to_the_root_filesystem_fails_because_it_is_read_only():
    code = (
        "import errno, json\nout = {}\n"
        "for path in ('/x', '/etc/x', '/usr/x', '/usr/bin/python3', '/sandbox/main.py'):\n"
        "    try:\n        open(path, 'a').close(); out[path] = 'written'\n"
        "    except OSError as e:\n        out[path] = errno.errorcode[e.errno]\n"
        "print(json.dumps(out))\n"
    )
    out = facts(code)
    # gVisor checks permissions before the read-only mount: the sandbox user gets EACCES first.
    refused = {"EROFS", "EACCES"} if under_gvisor() else {"EROFS"}
    assert {out["/x"], out["/etc/x"], out["/usr/x"]} <= refused
    assert out["/usr/bin/python3"] in ("EROFS", "EACCES")
    assert out["/sandbox/main.py"] == "EACCES"  # the code file itself is read-only to the program


# 11
def test_all_capabilities_are_zero_and_the_user_is_not_root():
    code = READ_STATUS + (
        "import json, os\n"
        "print(json.dumps({k: status.get(k) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', "
        "'NoNewPrivs', 'Seccomp')} | {'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups()}))\n"
    )
    out = facts(code)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert out[key] == "0" * 16, key
    # gVisor has no CapAmb line; ambient capabilities are a subset of the (empty) permitted set anyway.
    assert out["CapAmb"] == "0" * 16 or (out["CapAmb"] is None and under_gvisor())
    assert out["uid"] == 10001 and out["gid"] == 10001 and 0 not in out["groups"]
    assert out["NoNewPrivs"] == "1"
    assert out["Seccomp"] == "2"


# 12
@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are for x86_64")
def test_privileged_operations_all_fail_with_a_permission_error():
    code = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def sys(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *args)
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
os.makedirs("/tmp/m", exist_ok=True)
out = {
    "mount": sys(165, b"none", b"/tmp/m", b"tmpfs", 0, None),
    "unshare_user": sys(272, 0x10000000),
    "unshare_net": sys(272, 0x40000000),
    "unshare_ns": sys(272, 0x00020000),
    "setns": sys(308, 0, 0),
    "chroot": sys(161, b"/tmp"),
    "mknod_char_device": sys(133, b"/tmp/null", 0o20666, os.makedev(1, 3)),
    "finit_module": sys(313, 0, b"", 0),
    "init_module": sys(175, None, 0, b""),
    "ptrace_traceme": sys(101, 0, 0, 0, 0),
    "ptrace_attach_pid1": sys(101, 16, 1, 0, 0),
    "keyctl": sys(250, 0, 0, 0, 0, 0),
    "add_key": sys(248, b"user", b"k", b"v", 1, -2),
    "request_key": sys(249, b"user", b"k", None, -2),
    "perf_event_open": sys(298, None, 0, -1, -1, 0),
    "bpf": sys(321, 0, None, 0),
    "userfaultfd": sys(323, 0),
    "io_uring_setup": sys(425, 1, None),
    "process_vm_readv": sys(310, 1, None, 0, None, 0, 0),
}
for name, family, kind in (("af_packet", 17, socket.SOCK_RAW), ("af_netlink", 16, socket.SOCK_RAW),
                           ("raw_inet", socket.AF_INET, socket.SOCK_RAW), ("af_vsock", 40, socket.SOCK_STREAM)):
    try:
        socket.socket(family, kind, 1 if name == "raw_inet" else 0).close(); out[name] = "ok"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
import subprocess
for tool in (["mount", "-t", "tmpfs", "none", "/tmp/m"], ["unshare", "-r", "true"], ["chroot", "/", "true"],
             ["mknod", "/tmp/n", "c", "1", "3"], ["modprobe", "dummy"]):
    try:
        out["tool_" + tool[0]] = subprocess.run(tool, capture_output=True).returncode
    except OSError as e:
        out["tool_" + tool[0]] = errno.errorcode.get(e.errno)
print(json.dumps(out))
"""
    out = facts(code)
    permission = {"EPERM", "EACCES"}
    for name, value in out.items():
        if name.startswith("tool_"):
            assert value not in (0, "ok"), name  # the tool is missing (ENOENT) or fails
        else:
            assert value in permission, (name, value)


# 13
def test_there_is_no_docker_socket_and_no_host_mount():
    code = r"""
import json, os
mounts = []
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    fields, rfields = left.split(), right.split()
    mounts.append({"root": fields[3], "point": fields[4], "options": fields[5], "fstype": rfields[0]})
sockets = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/var/run/containerd/containerd.sock")
           if os.path.exists(p)]
print(json.dumps({"mounts": mounts, "sockets": sockets}))
"""
    out = facts(code)
    assert out["sockets"] == []
    allowed_fs = {"overlay", "proc", "tmpfs", "devpts", "sysfs", "cgroup", "cgroup2", "mqueue"}
    root_fs = {"9p"} if under_gvisor() else {"overlay"}  # gVisor serves the image's files over 9p
    docker_files = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}
    for mount in out["mounts"]:
        if mount["point"] in docker_files:
            # Docker's generated per-container files: read-only like the rest of the root.
            assert mount["options"].split(",")[0] == "ro", mount
            continue
        if mount["point"] == "/usr/sbin/docker-init":
            # The engine's init (tini), bind-mounted read-only because the policy asks for an init.
            assert mount["options"].split(",")[0] == "ro", mount
            continue
        assert mount["fstype"] in allowed_fs | root_fs, mount
        if mount["fstype"] in root_fs:
            assert mount["point"] == "/" and mount["options"].split(",")[0] == "ro"


# 14
def test_the_environment_holds_no_platform_secret():
    os.environ["CRUCIBLE_TEST_CANARY_SECRET"] = "canary-3c1f"
    try:
        code = r"""
import json, os
environs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environs[pid] = open(f"/proc/{pid}/environ", "rb").read().decode("utf-8", "replace")
        except OSError:
            pass
print(json.dumps({"env": dict(os.environ), "all": environs}))
"""
        out = facts(code)
    finally:
        del os.environ["CRUCIBLE_TEST_CANARY_SECRET"]
    assert set(out["env"]) == {"PATH", "HOME", "LANG", "CRUCIBLE_OUTPUT_DIR"}
    assert out["env"]["CRUCIBLE_OUTPUT_DIR"] == "/output"
    everything = json.dumps(out)
    for secret in ("canary-3c1f", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "postgres://", "redis://", "TOKEN"):
        assert secret not in everything


# 15
def test_no_setuid_binary_is_usable():
    code = r"""
import json, os, stat, subprocess
found = []
for root in ("/usr", "/bin", "/sbin", "/lib", "/etc", "/opt", "/var"):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(d, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(os.path.join(d, f))
print(json.dumps({"setuid": found, "nnp": status["NoNewPrivs"]}))
"""
    out = facts(READ_STATUS + code)
    assert out["setuid"] == []
    assert out["nnp"] == "1"  # even a setuid binary brought in could not raise privileges


# 34
def test_nothing_that_identifies_or_measures_the_host_is_readable():
    code = r"""
import ctypes, errno, json, os
def read(path):
    try:
        return open(path).read()
    except OSError as e:
        return errno.errorcode[e.errno]
out = {p: read(p) for p in ("/proc/sys/kernel/random/boot_id", "/proc/stat", "/proc/loadavg", "/proc/uptime",
                            "/proc/meminfo", "/proc/self/cgroup", "/etc/resolv.conf")}
try:
    os.close(os.open("/dev/mqueue/q", os.O_CREAT | os.O_WRONLY, 0o600)); out["mqueue_file"] = "created"
except OSError as e:
    out["mqueue_file"] = errno.errorcode[e.errno]
librt = ctypes.CDLL("librt.so.1", use_errno=True)
queue = librt.mq_open(b"/q", os.O_CREAT | os.O_RDWR, 0o600, None)
out["mq_open"] = "ok" if queue >= 0 else errno.errorcode[ctypes.get_errno()]
print(json.dumps(out))
"""
    out = facts(code)
    host = {path: Path(path).read_text() for path in ("/proc/sys/kernel/random/boot_id", "/etc/resolv.conf")}
    assert host["/proc/sys/kernel/random/boot_id"].strip() not in json.dumps(out)
    assert "cpu " not in out["/proc/stat"] or out["/proc/stat"].split("\n")[0].split()[1:] == ["0"] * 10
    assert out["/proc/loadavg"] in ("", "ENOENT") or out["/proc/loadavg"].startswith("0.00 0.00 0.00")
    assert "docker" not in out["/proc/self/cgroup"]  # no container id: a cgroup namespace of its own
    assert out["/etc/resolv.conf"].split() == ["nameserver", "127.0.0.1"]
    for line in host["/etc/resolv.conf"].splitlines():
        if line.startswith("nameserver") and "127.0.0.1" not in line:
            assert line.split()[1] not in out["/etc/resolv.conf"]
    if out["/proc/meminfo"] not in ("", "ENOENT"):  # gVisor shows the sandbox's own memory, not the host's
        total_kb = int(out["/proc/meminfo"].split()[1])
        assert total_kb < int(Path("/proc/meminfo").read_text().split()[1]) // 16
    assert out["mqueue_file"] in ("EROFS", "EACCES", "ENOENT")
    assert out["mq_open"] == "EPERM"
