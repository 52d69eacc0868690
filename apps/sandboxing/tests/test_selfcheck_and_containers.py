"""Self-check of the enforced policy, and this instance's container listing/removal."""

import time
import uuid

import pytest

from apps.sandboxing import engine_runtime, selfcheck
from apps.sandboxing.containers import list_instance_containers, remove
from apps.sandboxing.engine_runtime import is_gvisor
from apps.sandboxing.incontainer import canary
from apps.sandboxing.policy import Profile, host_memory_mb, host_pids_limit
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError
from apps.sandboxing.tests.conftest import small_limits

pytestmark = pytest.mark.docker


def test_the_engine_enforces_the_whole_policy():
    assert selfcheck.self_check(force=True) == []
    selfcheck.require_policy()


def test_the_self_check_result_is_cached(monkeypatch):
    selfcheck.self_check(force=True)
    monkeypatch.setattr(selfcheck, "_problems", lambda limits: pytest.fail("not cached"))
    assert selfcheck.self_check() == []


def test_a_failed_check_is_tried_again_sooner_than_a_passed_one(monkeypatch, settings):
    """The engine may only have been restarting: a failure is not trusted for the whole cache period."""
    settings.SANDBOX_RUNTIME = "flaky-check-runtime"  # its own cache entry
    calls = []
    monkeypatch.setattr(selfcheck, "_problems", lambda limits: calls.append(1) or ["engine unreachable"])
    now = [1000.0]
    monkeypatch.setattr(selfcheck.time, "monotonic", lambda: now[0])
    assert selfcheck.self_check(force=True) == ["engine unreachable"]
    now[0] += selfcheck.FAILURE_CACHE_SECONDS - 1
    selfcheck.self_check()
    assert len(calls) == 1
    now[0] += 2
    selfcheck.self_check()
    assert len(calls) == 2


def test_an_engine_that_cannot_apply_the_policy_makes_the_sandbox_unavailable(settings):
    settings.SANDBOX_RUNTIME = "no-such-runtime"
    problems = selfcheck.self_check(force=True)
    assert problems and "runtime" in problems[0].lower()
    with pytest.raises(selfcheck.SandboxUnavailable):
        selfcheck.require_policy()


def test_this_instances_containers_are_listed_with_their_run_and_removed():
    run_id = str(uuid.uuid4())
    sandbox = Sandbox.create(Profile(image="crucible-sandbox:latest", limits=small_limits()), run_id=run_id)
    try:
        assert (sandbox.container_id, run_id) in list_instance_containers()
        remove(sandbox.container_id)
        assert list_instance_containers() == []
        remove(sandbox.container_id)  # already gone: fine
    finally:
        sandbox.remove()


def test_a_canary_left_behind_is_reported_once_it_is_older_than_any_canary_runs(monkeypatch):
    """An engine that restarts between a canary's create and start leaves it "Created": the canary's
    own cleanup could not reach the engine. Only canaries are reported, and only old ones."""
    profile = Profile(image="crucible-sandbox:latest", limits=small_limits())
    canary = Sandbox.create(profile, run_id=f"{selfcheck.CANARY_RUN_PREFIX}{uuid.uuid4()}")
    evaluation = Sandbox.create(profile, run_id=str(uuid.uuid4()))
    try:
        assert selfcheck.left_canaries() == []  # it may still be running
        time.sleep(1.1)  # the engine's creation times are in whole seconds
        monkeypatch.setattr(selfcheck, "CANARY_LEFT_AFTER_S", 1)
        assert selfcheck.left_canaries() == [canary.container_id]
    finally:
        canary.remove()
        evaluation.remove()


def test_the_engine_applied_every_part_of_the_policy_to_the_container(settings):
    limits = small_limits(memory_mb=48, cpus=0.5, pids=40)
    sandbox = Sandbox.create(Profile(image="crucible-sandbox:latest", limits=limits), run_id=str(uuid.uuid4()))
    try:
        attrs = sandbox.api.inspect_container(sandbox.container_id)
    finally:
        sandbox.remove()
    host, config = attrs["HostConfig"], attrs["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert any(opt.startswith("seccomp=") and "SCMP_ACT_ERRNO" in opt for opt in host["SecurityOpt"])
    assert host["Memory"] == host["MemorySwap"] == host_memory_mb(limits, sandbox.profile.engine_runtime) * 1024 * 1024
    assert (host["Memory"] == 48 * 1024 * 1024) != is_gvisor(host["Runtime"])
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == host_pids_limit(limits, sandbox.profile.engine_runtime)
    assert (host["PidsLimit"] == 40) != is_gvisor(host["Runtime"])
    assert host["Init"] is True
    assert host["Runtime"] == engine_runtime.chosen()
    assert host["LogConfig"]["Type"] == "none"
    assert not host["Binds"] and not host.get("Mounts") and not attrs["Mounts"]
    assert set(host["Tmpfs"]) == {"/tmp", "/output", "/sandbox", "/dev/mqueue"}
    assert host["Tmpfs"]["/dev/mqueue"].startswith("ro,")
    assert host["CgroupnsMode"] == "private"
    assert "/proc/sys/kernel/random/boot_id" in host["MaskedPaths"] and "/proc/kcore" in host["MaskedPaths"]
    assert {u["Name"] for u in host["Ulimits"]} >= {"nofile", "fsize"}
    assert config["User"] == "10001:10001"
    assert config["Labels"]["org.crucible.instance"] == settings.CRUCIBLE_INSTANCE
    env_names = {item.split("=", 1)[0] for item in config["Env"]}
    # The image's own ENV (PYTHONDONTWRITEBYTECODE) is merged in by the engine; nothing from the host.
    assert env_names <= {"PATH", "HOME", "LANG", "CRUCIBLE_OUTPUT_DIR", "PYTHONDONTWRITEBYTECODE"}


def test_a_canary_that_reports_a_hole_in_the_policy_is_a_problem():
    limits = small_limits(pids=40)
    sound = {
        "uid": 10001,
        "gid": 10001,
        "CapEff": "0" * 16,
        "CapPrm": "0" * 16,
        "CapBnd": "0" * 16,
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "root_writable": False,
        "interfaces": ["lo"],
        "packet_socket": False,
        "pids_max": "40",
        "docker_sock": False,
    }
    assert selfcheck.problems_in(sound, limits) == []
    holes = {"uid": 0, "CapEff": "0000000000000400", "interfaces": ["eth0", "lo"], "pids_max": "max"}
    problems = selfcheck.problems_in(sound | holes, limits)
    assert len(problems) == 4
    assert "the program runs as root" in problems


def test_a_sandbox_the_engine_created_is_not_taken_for_one_lost_in_a_restart():
    sandbox = Sandbox.create(Profile(image="crucible-sandbox:latest", limits=small_limits()), run_id=str(uuid.uuid4()))
    try:
        assert sandbox.engine_lost() is False
    finally:
        sandbox.remove()


def test_a_container_missing_from_the_engines_event_log_counts_as_lost():
    """After an engine restart its event log is empty: no "create" event for the container."""
    profile = Profile(image="crucible-sandbox:latest", limits=small_limits())
    ghost = Sandbox("0" * 64, image_id="", profile=profile, created_at=time.time())
    assert ghost.engine_lost() is True


def test_a_run_id_that_is_no_plain_name_is_refused_before_the_engine_is_asked():
    with pytest.raises(SandboxSetupError) as refused:
        Sandbox.create(Profile(image="crucible-sandbox:latest", limits=small_limits()), run_id="../x")
    assert not refused.value.failure.transient


PROC_NET_DEV = (  # what gVisor's /proc/net/dev looks like, with one interface too many
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop\n"
    "    lo:       0       0    0    0    0     0          0         0        0       0    0    0\n"
    "  eth0:    1296      16    0    0    0     0          0         0      656       8    0    0\n"
)


def test_without_sys_class_net_the_canary_reads_the_interfaces_from_proc_net_dev(tmp_path):
    """gVisor from 2023 on has no /sys/class/net: an interface it lists in /proc/net/dev still fails the
    check, and a sandbox with only loopback passes it."""
    dev = tmp_path / "dev"
    dev.write_text(PROC_NET_DEV)
    assert canary.network_interfaces(str(tmp_path / "no-such-dir"), str(dev)) == ["eth0", "lo"]
    assert canary.network_interfaces(str(tmp_path / "no-such-dir"), str(tmp_path / "absent")) is None
    (tmp_path / "class" / "lo").mkdir(parents=True)
    assert canary.network_interfaces(str(tmp_path / "class"), str(dev)) == ["lo"]
