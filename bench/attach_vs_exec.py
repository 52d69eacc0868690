"""What a fresh sandbox could save: a trivial program exec'd into an idle container (a launch exec and
a collect exec, then removal of a running container) against the program as the container's main
process, fed over ``attach`` (no exec; the container stops by itself before its removal).

Interleaved pairs, our own harmless commands only (``/bin/true``, a shell reading one line), in the
sandbox image with a reduced policy: it measures the engine's costs, not Crucible's. Usage:
``python bench/attach_vs_exec.py runc|runsc [PAIRS]``.
"""

import statistics
import sys
import time

import docker

client = docker.from_env()
api = client.api
IMAGE = "crucible-sandbox:latest"
runtime = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10
base = dict(
    image=IMAGE,
    user="1000:1000",
    network_disabled=True,
    runtime=runtime,
    read_only=True,
    cap_drop=["ALL"],
    security_opt=["no-new-privileges:true"],
    init=True,
    detach=True,
    tmpfs={"/tmp": "size=16m"},
    mem_limit="256m",
)


def exec_style():
    c = client.containers.create(command=["/usr/local/libexec/crucible-helper", "idle"], **base)
    c.start()
    t0 = time.monotonic()
    e = api.exec_create(c.id, ["/bin/true"], user="1000:1000")
    api.exec_start(e["Id"])
    api.exec_inspect(e["Id"])
    e = api.exec_create(c.id, ["/bin/true"], user="1000:1000")  # the collect exec
    api.exec_start(e["Id"])
    api.exec_inspect(e["Id"])
    t1 = time.monotonic()
    c.remove(force=True)
    return t1 - t0


def attach_style():
    c = client.containers.create(command=["/bin/sh", "-c", "read x; echo got $x"], stdin_open=True, **base)
    c.start()
    t0 = time.monotonic()
    sock = api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = sock._sock
    raw.sendall(b"hello\n")
    data = b""
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            break
        data += chunk
    code = api.wait(c.id)["StatusCode"]
    t1 = time.monotonic()
    assert b"got hello" in data and code == 0, (data, code)
    sock.close()
    c.remove(force=True)
    return t1 - t0


def full(fn):
    t0 = time.monotonic()
    part = fn()
    return time.monotonic() - t0, part


exec_runs, attach_runs = [], []
for _ in range(N):
    exec_runs.append(full(exec_style))
    attach_runs.append(full(attach_style))
for name, runs in (("exec (launch+collect)", exec_runs), ("attach main process", attach_runs)):
    whole = statistics.median(run[0] for run in runs) * 1000
    part = statistics.median(run[1] for run in runs) * 1000
    print(f"{runtime} {name:24s} whole median {whole:.0f} ms, delivery part {part:.0f} ms")
