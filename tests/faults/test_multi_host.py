"""Workers on two hosts: a worker needs only PostgreSQL, Redis and an engine of its own.

Host A is this machine's network namespace: web, one worker and the reconciler on the system engine.
Host B is another network namespace joined by a veth pair, with its own ``dockerd`` (its own data
root and its own copy of the sandbox image) and one worker that reaches the shared PostgreSQL and
Redis only through the veth pair. Both take work; then host B's worker and engine are killed
mid-run and its run is handed back and finishes on host A, once, with its output complete.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker

from tests.faults.test_faults import audit_actions, check_output, no_containers_left, wait_streaming
from tests.stack import (
    NetworkNamespace,
    PrivateDocker,
    PrivateStack,
    Stack,
    running_private_services,
    wait_until,
)

pytestmark = pytest.mark.faults

SYSTEM_DOCKER = "unix:///var/run/docker.sock"
SANDBOX_IMAGE = "crucible-sandbox:latest"
METRICS_TOKEN = "multi-host-scrape-token"
# 60 lines, one every 0.2 s: about 12 s, long enough to kill a host under it.
LONG_STREAMER = "import time\nfor i in range(1, 61):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)\n"
LONG_EXPECTED = b"".join(f"line {i}\n".encode() for i in range(1, 61))


@dataclass
class TwoHosts:
    a: PrivateStack  # web, worker, reconciler on the system engine
    b: Stack  # one worker in the other namespace
    engine_b: PrivateDocker
    netns: NetworkNamespace

    def host_of(self, worker_name: str) -> str:
        if worker_name in self.a.worker_names.values():
            return "host-a"
        if worker_name in self.b.worker_names.values():
            return "host-b"
        raise AssertionError(f"{worker_name} is no worker of either host")

    def host_metrics(self) -> dict[tuple[str, str], float]:
        response = requests.get(
            self.a.url + "/api/v1/metrics/", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        assert response.status_code == 200, response.text
        return {
            (sample.name, sample.labels.get("host", "")): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name.startswith("crucible_host_")
        }


@pytest.fixture(scope="module")
def two_hosts():
    netns = NetworkNamespace().create()
    base = Path(tempfile.mkdtemp(prefix="crucible-hosts-"))  # readable by the postgres user
    engine_b = PrivateDocker(netns=netns)
    host_a = host_b = None
    try:
        with running_private_services(base, netns) as (db, redis):
            host_a = PrivateStack(base / "a", db, redis, SYSTEM_DOCKER, workers=1)
            host_a.env.update(WORKER_HOST="host-a", METRICS_TOKEN=METRICS_TOKEN)
            host_a.prepare()
            host_a.start()

            engine_b.start()
            engine_b.load_image(SANDBOX_IMAGE)
            env_b = {
                **host_a.env,
                "WORKER_HOST": "host-b",
                # Host B knows the shared services only by their address on the veth pair.
                "DATABASE_URL": db.url_at(netns.host_address),
                "REDIS_URL": redis.url_at(netns.host_address),
                "DOCKER_HOST": engine_b.host,
            }
            host_b = Stack(env_b, base / "b", workers=1, name="host-b", rq_connection=redis.client)
            host_b.worker_wrapper = netns.enter()
            host_b.start_worker(0)
            wait_until(
                lambda: host_b.worker_names["worker0"] in {w.name for w in Worker.all(connection=redis.client())},
                60,
                what="host B's worker to register",
            )
            yield TwoHosts(host_a, host_b, engine_b, netns)
    finally:
        if host_b is not None:
            host_b.stop()
        if host_a is not None:
            host_a.stop()
            host_a.remove_containers()
        # The killed engine's containers outlived it: an engine started on its data cleans them up.
        if engine_b.process is not None and engine_b.process.poll() is not None:
            try:
                engine_b.start()
            except Exception as exc:  # noqa: BLE001 (clean-up goes on: the directory is removed below)
                print(f"host B's engine did not come back for clean-up: {exc}")
        engine_b.cleanup()
        netns.delete()
        shutil.rmtree(base, ignore_errors=True)


def test_both_hosts_take_work_and_each_shows_on_its_own(two_hosts):
    hosts = two_hosts
    code = "import time\ntime.sleep(1.5)\nprint('done', flush=True)\n"
    ids = [hosts.a.submit(code) for _ in range(6)]
    rows = {i: hosts.a.wait_terminal(i, 120) for i in ids}
    assert {row["status"] for row in rows.values()} == {"succeeded"}, rows
    assert {hosts.host_of(row["worker"]) for row in rows.values()} == {"host-a", "host-b"}

    # The web holds host A's engine only; what it says of host B comes from B's worker's heartbeat.
    metrics = wait_until(
        lambda: (m := hosts.host_metrics()).get(("crucible_host_workers", "host-b")) == 1 and m,
        30,
        what="both hosts in the metrics",
    )
    for host in ("host-a", "host-b"):
        assert metrics[("crucible_host_workers", host)] == 1
        assert metrics[("crucible_host_engine_up", host)] == 1
        assert metrics[("crucible_host_last_heartbeat_timestamp_seconds", host)] > 0
    health = requests.get(hosts.a.url + "/api/v1/health/", timeout=10)
    assert health.status_code == 200, health.text


def test_a_host_lost_mid_run_hands_its_run_back_and_it_finishes_on_the_other_host(two_hosts):
    hosts = two_hosts
    ids = [hosts.a.submit(LONG_STREAMER, timeout_s=60) for _ in range(2)]  # one worker per host: one each
    rows = {i: wait_streaming(hosts.a, i, min_chunks=5) for i in ids}
    on_b = [i for i, row in rows.items() if hosts.host_of(row["worker"]) == "host-b"]
    assert len(on_b) == 1, {i: row["worker"] for i, row in rows.items()}
    lost = on_b[0]

    # Host B dies: its worker (and work horse) and its engine, at once, with no goodbye.
    hosts.b.kill_worker("worker0", signal.SIGKILL)
    hosts.engine_b.kill()

    for eid in ids:
        row = hosts.a.wait_terminal(eid, 150)
        assert (row["status"], row["exit_code"]) == ("succeeded", 0), (eid, row)
        assert hosts.host_of(row["worker"]) == "host-a"
    assert hosts.a.row(lost)["attempts"] == 2
    check_output(hosts.a, lost, expected=LONG_EXPECTED, attempts=2)  # nothing lost, nothing twice
    (survivor,) = set(ids) - {lost}
    assert hosts.a.row(survivor)["attempts"] == 1
    check_output(hosts.a, survivor, expected=LONG_EXPECTED, attempts=1)
    assert "reconciler.worker_lost" in audit_actions(hosts.a, lost)
    no_containers_left(hosts.a)

    # Host B's worker stops counting once its heartbeat is stale, though Redis still lists it a while.
    metrics = wait_until(
        lambda: (m := hosts.host_metrics()).get(("crucible_host_workers", "host-b"), 0) == 0 and m,
        60,
        what="host B to show no live worker",
    )
    assert metrics[("crucible_host_workers", "host-a")] == 1
    assert requests.get(hosts.a.url + "/api/v1/health/", timeout=10).status_code == 200
