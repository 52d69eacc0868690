"""The benchmarks' CPU accounting (``bench/cpu_share.py``) names processes rightly and counts their time."""

import subprocess
import sys

import pytest

from bench.cpu_share import CpuShare, group_of

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


@pytest.mark.parametrize(
    ("cmdline", "comm", "group"),
    [
        (b"runsc-sandbox\0--root=/var/run\0boot", "exe", "gVisor sandbox"),
        (b"runsc-gofer\0--root=/var/run\0gofer", "exe", "gVisor gofer"),
        (b"/usr/bin/runsc\0--network=none\0create\0abc", "runsc", "gVisor runsc commands"),
        (b"", "exe", "gVisor ptrace stubs"),
        (b"", "kworker/0:1", "other"),
        (b"postgres: 15/main: crucible 127.0.0.1(5432) idle", "postgres", "postgres"),
        (b"/usr/bin/redis-server 127.0.0.1:6379", "redis-server", "redis"),
        (b"/work/.venv/bin/python\0-m\0daphne\0-b\0127.0.0.1", "python", "web"),
        (b"/work/.venv/bin/python\0manage.py\0crucible_worker\0--name\0w1", "python", "workers"),
        (b"containerd-shim-runc-v2\0-namespace\0moby", "containerd-shim", "containerd"),
        # A benchmark run with "runsc" among its arguments is not gVisor.
        (b"/work/.venv/bin/python\0bench/humaneval.py\0--runtimes\0runsc", "python", "other"),
    ],
)
def test_a_process_is_grouped_by_its_program(cmdline, comm, group):
    assert group_of(cmdline, comm) == group


def test_the_cpu_of_a_process_started_in_the_window_is_counted_in_its_group():
    cpu = CpuShare(interval_s=0.02)
    cpu.start()
    subprocess.run([sys.executable, "-c", "import time; time.sleep(0.1)\n" + BURN], check=True)
    cpu.stop()

    assert cpu.seconds("other") >= 0.3
    assert cpu.busy_s >= 0.3
    assert cpu.seconds() <= cpu.busy_s + 0.1
    assert "host busy" in cpu.report(per=2)
