"""Adversarial cases 16-17 (network), at the runner level."""

import ipaddress
import json
import socket

import pytest

from apps.sandboxing import engine
from apps.sandboxing.tests.conftest import execute

pytestmark = pytest.mark.docker

PROBE = r"""
import json, socket, sys
out = {}
for host, port in json.loads(sys.stdin.read()):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect((host, port))
        out[f"{host}:{port}"] = "connected"
    except OSError as e:
        out[f"{host}:{port}"] = type(e).__name__ + ":" + str(e.errno)
    finally:
        s.close()
try:
    socket.getaddrinfo("example.com", 80)
    out["dns"] = "resolved"
except OSError as e:
    out["dns"] = type(e).__name__
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("1.1.1.1", 53))
    out["udp"] = "sent"
except OSError as e:
    out["udp"] = type(e).__name__
import os
out["interfaces"] = sorted(os.listdir("/sys/class/net"))
print(json.dumps(out))
"""


def bridge_gateway() -> str:
    network = engine.client().networks.get("bridge")
    for config in network.attrs.get("IPAM", {}).get("Config") or []:
        if config.get("Gateway"):
            return config["Gateway"]
        if config.get("Subnet"):
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    pytest.skip("the engine reports no bridge network")


def probe(targets: list[tuple[str, int]]) -> dict:
    run = execute(PROBE, stdin=json.dumps(targets).encode(), timeout_s=10)
    assert run.result.outcome == "exited", run.stderr
    return json.loads(run.stdout)


# 16
def test_no_public_address_is_reachable_and_no_name_resolves():
    out = probe([("1.1.1.1", 80), ("8.8.8.8", 53), ("93.184.216.34", 443)])
    for target in ("1.1.1.1:80", "8.8.8.8:53", "93.184.216.34:443"):
        assert out[target] != "connected"
    assert out["dns"] == "gaierror"
    assert out["udp"] != "sent"
    assert out["interfaces"] == ["lo"]


# 17
def test_the_metadata_address_and_the_hosts_local_services_are_unreachable():
    targets = [("169.254.169.254", 80), ("127.0.0.1", 6379), ("127.0.0.1", 5432)]
    out = probe(targets)
    for host, port in targets:
        assert out[f"{host}:{port}"] != "connected", (host, port)


def test_the_bridge_gateway_is_unreachable():
    gateway = bridge_gateway()
    targets = [(gateway, 6379), (gateway, 5432), (gateway, 80), (gateway, 2375)]
    out = probe(targets)
    for host, port in targets:
        assert out[f"{host}:{port}"] != "connected", (host, port)


def test_the_local_services_probed_do_exist_on_the_host():
    """The probe above is meaningful: from the host, Redis and PostgreSQL answer on 127.0.0.1."""
    for port in (6379, 5432):
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
