"""What a fresh interpreter prints once it has imported ``crucible.asgi`` as the web server does
(before anything read the settings), or as a process that had its settings first (tests, a worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def printed_after_importing_the_application(code: str, *, settings_first: bool = False) -> str:
    """The last line ``code`` printed, run after ``import crucible.asgi`` in a new interpreter."""
    prelude = "import django; django.setup()\n" if settings_first else ""
    program = f"{prelude}import crucible.asgi\n{code}\n"
    env = {**os.environ, "CRUCIBLE_ENV": "test", "DJANGO_SETTINGS_MODULE": "crucible.settings"}
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]
