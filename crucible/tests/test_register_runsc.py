"""scripts/register_runsc.py: gVisor is registered with the engine without disturbing anything else."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "register_runsc.py"
WANTED = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--oci-seccomp"]}


def register(path: Path) -> str:
    done = subprocess.run([sys.executable, SCRIPT, path, "/usr/bin/runsc"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_machine_without_daemon_json_gets_one_with_runsc_and_no_network(tmp_path):
    path = tmp_path / "docker" / "daemon.json"
    assert register(path) == "changed"
    assert json.loads(path.read_text()) == {"runtimes": {"runsc": WANTED}}


def test_other_settings_and_runtimes_are_kept_and_a_second_run_changes_nothing(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-level": "warn", "runtimes": {"kata": {"path": "/opt/kata"}}}))
    assert register(path) == "changed"
    assert json.loads(path.read_text()) == {
        "log-level": "warn",
        "runtimes": {"kata": {"path": "/opt/kata"}, "runsc": WANTED},
    }
    before = path.read_text()
    assert register(path) == "unchanged"
    assert path.read_text() == before


def test_a_runsc_registered_with_other_flags_is_corrected(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}))
    assert register(path) == "changed"
    assert json.loads(path.read_text())["runtimes"]["runsc"] == WANTED
