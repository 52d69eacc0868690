"""The web server's process freezes what it loaded at start-up (``gc.freeze`` in ``crucible/asgi.py``):
the collector's full passes then walk only what came later. With a thousand viewers those passes,
each over every object Django and the libraries made at import, stopped a web process for
200-400 ms every 10-20 s. Other processes that import the application (tests, management commands)
are left as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def frozen_after_import(*, settings_first: bool) -> int:
    """How many objects are frozen in a fresh interpreter once it has imported ``crucible.asgi``."""
    code = "import gc\n"
    if settings_first:  # a process that had its settings before (tests, a worker)
        code += "import django; django.setup()\n"
    code += "import crucible.asgi\nprint(gc.get_freeze_count())\n"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "crucible.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_the_web_servers_process_freezes_what_it_loaded_at_start_up():
    assert frozen_after_import(settings_first=False) > 100_000


def test_a_process_that_had_its_settings_first_is_left_as_it_is():
    assert frozen_after_import(settings_first=True) == 0
