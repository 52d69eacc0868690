"""Adversarial cases 10-17, 25 and 37 for sessions: a session's sandbox is as locked down as an
evaluation's, its files API does not read or write where the sandbox user could not, and another
user's session does not exist for bob. Through the real API, a real session host and real sandboxes
(``live_sessions_stack``), under whatever ``SANDBOX_RUNTIME`` the run uses.

The cases here do not disturb the sandbox, so the module shares one session of alice's; the users
live for the module (a transactional test would flush them after its first test), and the database
is flushed at the end as a transactional test would leave it.
"""

# ruff: noqa: F811 (pytest injects the fixtures imported from adversarial.py by name)
from __future__ import annotations

import ipaddress
import json
import os

import pytest
import requests
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from apps.sandboxing import engine, engine_runtime
from apps.sandboxing.policy import LABEL_RUN
from apps.sessions.tests.adversarial import alice, bob, people, python, run  # noqa: F401 (fixtures)
from apps.sessions.tests.test_sessions_live import Api
from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

# django_db (not transactional): it makes pytest-django set up the test database, and each test's
# own transaction is rolled back (the tests write nothing through it; the stack commits its own).
pytestmark = [pytest.mark.docker, pytest.mark.django_db]

CANARY = "canary-7e2d-session-secret"
# Names and URL schemes of the platform's secrets: none may appear anywhere a sandbox can read.
SECRET_MARKERS = (CANARY, "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "postgres://", "redis://", "TOKEN")
CONTRACT_ENV = {"PATH", "HOME", "LANG", "CRUCIBLE_OUTPUT_DIR", "CRUCIBLE_EXEC_ID"}
GVISOR = engine_runtime.is_gvisor(engine_runtime.chosen())


@pytest.fixture(scope="module", autouse=True)
def canary_in_the_hosts_environment():
    """A secret in the environment of every process of the stack (they inherit this process's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRUCIBLE_TEST_CANARY_SECRET", CANARY)
        yield


@pytest.fixture(scope="module")
def sid(alice):
    """The id of alice's session, shared by the module's tests."""
    response = alice.create(metadata={"case": "escape"})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ready", response.json()
    yield response.json()["id"]
    alice.http.delete(f"{alice.base}{response.json()['id']}/", timeout=30)


def under_gvisor(api: Api, session_id: str) -> bool:
    return api.http.get(f"{api.base}{session_id}/", timeout=30).json()["sandbox_runtime"] == "runsc"


# --- 11, 15: identity and privileges ------------------------------------------------------------------

STATUS = r"""
import ctypes, json, os, stat
status = {k: v.strip() for k, v in (l.split(":", 1) for l in open("/proc/self/status").read().splitlines())}
status.setdefault("NoNewPrivs", str(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)))
setuid = []
for root in ("/usr", "/bin", "/sbin", "/lib", "/etc", "/opt", "/var"):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(d, f))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                setuid.append(os.path.join(d, f))
print(json.dumps({k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
                 | {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
                    "setuid": setuid}))
"""


def test_an_exec_runs_as_the_sandbox_user_with_no_capabilities_and_no_usable_setuid_binary(alice, sid):
    out = python(alice, sid, STATUS)
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert out[key] == "0" * 16, key
    assert out["CapAmb"] in ("0" * 16, None)  # gVisor has no CapAmb line; it is a subset of CapPrm anyway
    assert (out["uid"], out["euid"], out["gid"]) == (10001, 10001, 10001) and 0 not in out["groups"]
    assert out["NoNewPrivs"] == "1"
    assert out["setuid"] == []


def test_an_exec_runs_under_the_sandbox_seccomp_profile(alice, sid):
    out = python(alice, sid, STATUS)
    assert out["Seccomp"] == "2"


def test_asking_for_root_is_refused_as_user_unsupported(alice, sid):
    for user in ("root", "0", "nobody", "10002"):
        result = run(alice, sid, ["id", "-u"], user=user)
        assert (result["error"], result["returncode"], result["stdout"]) == ("user_unsupported", None, ""), user
    assert run(alice, sid, ["id", "-u"], user="10001")["stdout"] == "10001\n"


PRIVILEGED = r"""
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
    "unshare_ns": sys(272, 0x00020000),
    "chroot": sys(161, b"/tmp"),
    "mknod_char_device": sys(133, b"/tmp/null", 0o20666, os.makedev(1, 3)),
    "ptrace_attach_pid1": sys(101, 16, 1, 0, 0),
    "keyctl": sys(250, 0, 0, 0, 0, 0),
    "perf_event_open": sys(298, None, 0, -1, -1, 0),
    "bpf": sys(321, 0, None, 0),
}
try:
    socket.socket(17, socket.SOCK_RAW, 0).close(); out["af_packet"] = "ok"
except OSError as e:
    out["af_packet"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are for x86_64")
def test_privileged_operations_from_an_exec_fail_with_a_permission_error(alice, sid):
    out = python(alice, sid, PRIVILEGED)
    for name, value in out.items():
        assert value in ("EPERM", "EACCES"), (name, value)


# --- 10, 37: writes outside the writable places -------------------------------------------------------

WRITES = r"""
import errno, json
out = {}
for path in ("/x", "/etc/x", "/usr/x", "/usr/bin/python3", "/etc/passwd", "/usr/local/bin/x"):
    try:
        open(path, "a").close(); out[path] = "written"
    except OSError as e:
        out[path] = errno.errorcode[e.errno]
for path in ("/sandbox/w", "/tmp/w", "/output/w", "/dev/shm/w"):
    open(path, "w").write("ok"); out[path] = open(path).read()
print(json.dumps(out))
"""


def test_an_exec_cannot_write_to_the_root_filesystem_only_to_the_writable_places(alice, sid):
    out = python(alice, sid, WRITES)
    for path in ("/x", "/etc/x", "/usr/x", "/usr/bin/python3", "/etc/passwd", "/usr/local/bin/x"):
        assert out[path] in ("EROFS", "EACCES"), (path, out[path])
    for path in ("/sandbox/w", "/tmp/w", "/output/w", "/dev/shm/w"):
        assert out[path] == "ok", path


def test_the_files_api_cannot_write_outside_the_writable_places_and_says_so_cleanly(alice, sid):
    for path in ("/etc/x", "/x", "/usr/bin/python3", "/etc/passwd", "/sandbox/../etc/passwd", "/usr/lib/new/dir/x"):
        response = alice.put(sid, path, b"owned")
        assert response.status_code == 403, (path, response.status_code, response.text)
        assert response.json()["code"] == "permission_denied"
        assert path.rsplit("/", 1)[-1] in response.json()["detail"]
    for path, code in (("/", "is_a_directory"), ("/sandbox", "is_a_directory")):
        response = alice.put(sid, path, b"x")
        assert (response.status_code, response.json()["code"]) == (400, code), (path, response.text)
    for path in ("/tmp/put.txt", "/output/put.txt", "/dev/shm/put.txt", "relative/put.txt"):
        response = alice.put(sid, path, b"fine")
        assert response.status_code == 200, (path, response.text)
        assert alice.get(sid, path).content == b"fine"
    assert run(alice, sid, ["cat", "/etc/passwd"])["stdout"].startswith("root:")  # untouched


def test_writing_under_a_file_as_if_it_were_a_directory_is_400_not_a_directory(alice, sid):
    response = alice.put(sid, "/etc/passwd/x", b"x")
    assert (response.status_code, response.json()["code"]) == (400, "not_a_directory"), response.text


# --- 13: no engine socket, no host path ---------------------------------------------------------------

MOUNTS = r"""
import json, os
mounts = []
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    fields, rfields = left.split(), right.split()
    mounts.append({"root": fields[3], "point": fields[4], "options": fields[5], "fstype": rfields[0]})
sockets = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/var/run/containerd/containerd.sock",
                       "/run/containerd/containerd.sock", "/var/run/crio/crio.sock") if os.path.exists(p)]
print(json.dumps({"mounts": mounts, "sockets": sockets}))
"""


def test_there_is_no_docker_socket_and_no_host_path_mounted(alice, sid):
    out = python(alice, sid, MOUNTS)
    assert out["sockets"] == []
    gvisor = under_gvisor(alice, sid)
    allowed = {"overlay", "proc", "tmpfs", "devpts", "sysfs", "cgroup", "cgroup2", "mqueue"}
    root_fs = {"9p"} if gvisor else {"overlay"}
    for mount in out["mounts"]:
        if mount["point"] in ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/usr/sbin/docker-init"):
            assert mount["options"].split(",")[0] == "ro", mount  # the engine's own files, read-only
            continue
        assert mount["fstype"] in allowed | root_fs, mount
        if mount["fstype"] in root_fs:
            assert mount["point"] == "/" and mount["options"].split(",")[0] == "ro", mount
    points = {mount["point"]: mount for mount in out["mounts"]}
    assert points["/sandbox"]["fstype"] == "tmpfs"  # the workspace is the sandbox's own, not a host directory


# --- 14: the environment ----------------------------------------------------------------------------

ENVIRON = r"""
import json, os
environs = {}
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environs[pid] = open(f"/proc/{pid}/environ", "rb").read().decode("utf-8", "replace")
        except OSError:
            pass
own = dict(item.split("=", 1) for item in open("/proc/self/environ").read().split("\0") if item)
print(json.dumps({"own": own, "all": environs}))
"""


def test_an_execs_environment_is_the_contracts_and_no_process_holds_a_platform_secret(alice, sid):
    out = python(alice, sid, ENVIRON)
    assert set(out["own"]) == CONTRACT_ENV
    assert out["own"]["PATH"] == "/usr/local/bin:/usr/bin:/bin" and out["own"]["HOME"] == "/tmp"
    given = python(alice, sid, ENVIRON, env={"MY_KEY": "mine"})["own"]
    assert set(given) == CONTRACT_ENV | {"MY_KEY"} and given["MY_KEY"] == "mine"
    everything = json.dumps(out)
    leaked = [marker for marker in SECRET_MARKERS if marker in everything]
    assert leaked == []


def image_env_names() -> set[str]:
    """The variables the sandbox image itself sets (PID 1 and the agent inherit them from the engine)."""
    image = engine.client().images.get(settings.SANDBOX_IMAGE)
    return {item.split("=", 1)[0] for item in image.attrs["Config"].get("Env") or []}


def test_reading_proc_environ_through_a_symlink_in_the_workspace_shows_nothing_of_the_host(alice, sid):
    links = {"pid1-env": "/proc/1/environ", "self-env": "/proc/self/environ", "parent-env": "/proc/self/../1/environ"}
    for name, target in links.items():
        assert run(alice, sid, ["ln", "-sfn", target, name])["returncode"] == 0
    for name in links:
        response = alice.get(sid, name)
        assert response.status_code in (200, 403), (name, response.text)  # whatever the sandbox user may read
        names = {item.split(b"=", 1)[0].decode() for item in response.content.split(b"\0") if item}
        assert names <= CONTRACT_ENV | image_env_names() | {"HOSTNAME"}, (name, names)
        leaked = [marker for marker in SECRET_MARKERS if marker.encode() in response.content]
        assert leaked == [], name


def test_symlinks_to_files_the_sandbox_user_cannot_read_or_write_are_refused(alice, sid):
    links = {"shadow": "/etc/shadow", "passwd": "/etc/passwd", "root": "/", "dangling": "/etc/new-file"}
    for name, target in links.items():
        assert run(alice, sid, ["ln", "-sfn", target, name])["returncode"] == 0
    shadow = alice.get(sid, "shadow")
    assert (shadow.status_code, shadow.json()["code"]) == (403, "permission_denied")
    assert alice.get(sid, "passwd").content.startswith(b"root:")  # world-readable in the image: fine
    assert (alice.get(sid, "root").status_code, alice.get(sid, "root").json()["code"]) == (400, "is_a_directory")
    through_root = alice.get(sid, "root/etc/hostname")  # gVisor answers EISDIR here; runc the sandbox's file
    assert through_root.status_code in (200, 400), through_root.text
    assert through_root.status_code == 400 or through_root.content.strip() == b"sandbox"  # never the host's
    assert alice.get(sid, "dangling").status_code == 404
    written = alice.put(sid, "passwd", b"owned")
    assert (written.status_code, written.json()["code"]) == (403, "permission_denied")
    assert alice.put(sid, "root/etc/x", b"owned").status_code in (400, 403)
    assert alice.put(sid, "dangling", b"x").status_code == 403  # its parent is in the read-only root


def test_a_symlink_to_an_endless_device_is_refused_as_not_a_file(alice, sid):
    """The files API serves regular files only: a device (through a symlink too) is never read."""
    assert run(alice, sid, ["ln", "-sfn", "/dev/zero", "zeros"])["returncode"] == 0
    response = alice.get(sid, "zeros", max_bytes=4096)
    assert (response.status_code, response.json()["code"]) == (400, "not_a_file")


def test_reading_a_fifo_through_the_files_api_is_answered_not_left_waiting(alice, sid):
    """A FIFO no one writes to is not a file the API can return: a clear 4xx, not a request (and an
    agent thread) waiting for a writer until the host gives up on it."""
    assert run(alice, sid, ["mkfifo", "/sandbox/pipe"])["returncode"] == 0
    try:
        response = alice.http.get(f"{alice.base}{sid}/files/", params={"path": "pipe"}, timeout=60)
    except requests.ReadTimeout:
        response = None
    finally:
        # Something writes to the FIFO: a read still waiting on it returns.
        run(alice, sid, ["sh", "-c", "echo late > /sandbox/pipe & sleep 1; kill %1 2>/dev/null; true"], timeout_s=10)
    assert response is not None, "the read of a FIFO got no answer within a minute"
    assert response.status_code in (400, 403), response.text
    assert run(alice, sid, ["echo", "still here"])["stdout"] == "still here\n"


# --- path strings the API refuses before anything reaches the sandbox -------------------------------

BAD_PATHS = [
    "../../proc/self/environ",
    "/sandbox/../proc",
    "/sandbox/../../../proc/1/environ",
    "/proc/self/environ",
    "//proc/1/environ",
    "/./proc/self/mem",
    "/sys/kernel",
    "/dev/zero",
    "/dev/shm/../../proc/1/environ",
    "/dev/mqueue/x",
    "",
    "with\0nul",
    "/sandbox/" + "a" * 5000,
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda path: repr(path[:40]))
def test_path_strings_outside_what_the_sandbox_exposes_are_refused_with_400(alice, sid, path):
    read = alice.get(sid, path)
    assert read.status_code == 400, (path[:60], read.status_code, read.text[:300])
    written = alice.put(sid, path, b"x")
    assert written.status_code == 400, (path[:60], written.status_code, written.text[:300])
    if path:  # an empty cwd is the default one, the workspace
        cwd = alice.exec(sid, ["pwd"], cwd=path)
        assert cwd.status_code == 400, (path[:60], cwd.status_code, cwd.text[:300])


def test_a_percent_encoded_traversal_is_decoded_once_and_refused(alice, sid):
    url = f"{alice.base}{sid}/files/?path=..%2F..%2Fproc%2Fself%2Fenviron"
    assert alice.http.get(url, timeout=30).status_code == 400
    assert alice.http.get(f"{alice.base}{sid}/files/?path=%00", timeout=30).status_code == 400
    assert alice.http.get(f"{alice.base}{sid}/files/", timeout=30).status_code == 400  # no path at all


# --- 34: nothing that identifies or measures the host -----------------------------------------------

HOST_FACTS = r"""
import json
def read(path):
    try:
        return open(path).read()
    except OSError as e:
        return type(e).__name__
print(json.dumps({p: read(p) for p in ("/proc/sys/kernel/random/boot_id", "/proc/self/cgroup", "/etc/resolv.conf",
                                       "/proc/loadavg", "/etc/hostname")}))
"""


def test_nothing_that_identifies_the_host_or_the_container_is_readable(alice, sid):
    out = python(alice, sid, HOST_FACTS)
    with open("/proc/sys/kernel/random/boot_id") as handle:
        assert handle.read().strip() not in json.dumps(out)
    assert "docker" not in out["/proc/self/cgroup"]  # no container id: a cgroup namespace of its own
    assert out["/etc/resolv.conf"].split() == ["nameserver", "127.0.0.1"]
    assert out["/etc/hostname"].strip() == "sandbox"
    assert os.uname().nodename not in json.dumps(out)
    (container,) = engine.client().containers.list(filters={"label": f"{LABEL_RUN}=session-{sid}"})
    assert container.id[:12] not in json.dumps(out)


# --- 16, 17: no network -------------------------------------------------------------------------------

PROBE = r"""
import json, os, socket, sys
out = {}
for host, port in json.loads(sys.stdin.read()):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect((host, port)); out[f"tcp {host}:{port}"] = "connected"
    except OSError as e:
        out[f"tcp {host}:{port}"] = type(e).__name__
    finally:
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1)
    try:
        u.sendto(b"x", (host, port)); u.recv(1); out[f"udp {host}:{port}"] = "answered"
    except OSError as e:
        out[f"udp {host}:{port}"] = type(e).__name__
    finally:
        u.close()
for name in ("example.com", "localhost.localdomain.example", "host.docker.internal", "gateway.docker.internal"):
    try:
        socket.getaddrinfo(name, 80); out[f"dns {name}"] = "resolved"
    except OSError as e:
        out[f"dns {name}"] = type(e).__name__
out["interfaces"] = sorted(os.listdir("/sys/class/net"))
print(json.dumps(out))
"""


def bridge_gateway() -> str | None:
    network = engine.client().networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
        if config.get("Subnet"):
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    return None


def test_an_exec_has_no_network_no_dns_no_gateway_and_no_metadata_service(alice):
    """In a session of its own: its output names the cloud metadata address, which the default
    safety rule "cloud-metadata" answers by stopping the session (after this exec is answered)."""
    created = alice.create()
    assert created.status_code == 201 and created.json()["status"] == "ready", created.text
    try:
        probe_the_network(alice, created.json()["id"])
    finally:
        alice.http.delete(f"{alice.base}{created.json()['id']}/", timeout=30)


def probe_the_network(alice, sid) -> None:
    targets = [("1.1.1.1", 53), ("8.8.8.8", 53), ("93.184.216.34", 443), ("169.254.169.254", 80)]
    targets += [("127.0.0.1", 6379), ("127.0.0.1", 5432), ("127.0.0.1", 8000), ("127.0.0.1", 2375)]
    gateway = bridge_gateway()
    if gateway:
        targets += [(gateway, port) for port in (53, 80, 2375, 5432, 6379)]
    out = python(alice, sid, PROBE, input=json.dumps(targets), timeout_s=120)
    reached = {target: value for target, value in out.items() if value in ("connected", "answered", "resolved")}
    assert reached == {}
    assert out["interfaces"] == ["lo"]


# --- 25: bob and alice's session ----------------------------------------------------------------------


def test_bob_cannot_reach_alices_session_by_any_route(alice, bob, sid, live_sessions_stack):  # noqa: F811
    base = f"{bob.base}{sid}/"
    for method, url in (
        ("get", base),
        ("delete", base),
        ("post", base + "stop/"),
        ("get", base + "execs/"),
        ("get", base + "execs/?format=jsonl"),
        ("get", base + "execs/?after=0"),
        ("get", base + "files/?path=/etc/hostname"),
        ("put", base + "files/?path=x"),
    ):
        response = getattr(bob.http, method)(url, timeout=30)
        assert response.status_code == 404, (method, url, response.status_code)
        assert sid not in response.text and "alice" not in response.text
    assert bob.exec(sid, ["touch", "/sandbox/bob-was-here"]).status_code == 404
    assert bob.http.post(base + "exec/", json={"cmd": ["ls"]}, timeout=30).status_code == 404
    assert bob.http.get(bob.base, timeout=30).json()["count"] == 0
    assert bob.http.get(bob.base + "?status=ready", timeout=30).json()["count"] == 0
    assert sid.upper() != sid and bob.http.get(f"{bob.base}{sid.upper()}/", timeout=30).status_code == 404
    with connect(
        f"{live_sessions_stack.ws_url}/ws/sandboxes/{sid}/",
        additional_headers={"Authorization": f"Token {bob.http.headers['Authorization'].split()[1]}"},
        open_timeout=10,
    ) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = socket.recv(timeout=10)
                assert sid not in message
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
    detail = alice.http.get(f"{alice.base}{sid}/", timeout=30).json()
    assert detail["status"] == "ready" and detail["end_reason"] is None, detail
    assert run(alice, sid, ["ls", "/sandbox"])["stdout"].split().count("bob-was-here") == 0


# --- 33: hostile strings in an exec request -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"cmd": ["echo", "\\ud800"]}',
        '{"cmd": ["\\udfff"]}',
        '{"cmd": ["echo"], "env": {"X": "\\ud800"}}',
        '{"cmd": ["pwd"], "cwd": "/tmp/\\ud800"}',
        '{"cmd": ["cat"], "input": "\\ud800"}',
        '{"cmd": ["echo"], "user": "\\ud800"}',
        '{"cmd": ["echo"], "timeout_s": 1e400}',
        '{"cmd": ["echo", "x"], "env": {"X\\u0000": "y"}}',
        '{"cmd": ["echo"], "cwd": "\\u0000"}',
        '{"cmd": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["argv", "program", "env value", "cwd", "input", "user", "1e400", "NUL env name", "NUL cwd", "nested"],
)
def test_hostile_strings_in_an_exec_request_get_a_clear_answer_never_a_server_error(alice, sid, body):
    response = alice.http.post(
        f"{alice.base}{sid}/exec/", data=body.encode(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    if response.status_code == 200:
        assert response.json()["returncode"] is not None or response.json()["error"], response.json()
    transcript = alice.http.get(f"{alice.base}{sid}/execs/", timeout=30)
    assert transcript.status_code == 200
    assert all(step["status"] == "done" for step in transcript.json()["steps"]), "a step left running"
