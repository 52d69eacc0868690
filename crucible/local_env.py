"""Load ``KEY=VALUE`` lines from the git-ignored local env file written by the set-up script.

Values already in the real environment win, so an operator can always override one.
"""

from __future__ import annotations

import os
from pathlib import Path


def load_local_env(path: Path) -> None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        os.environ.setdefault(key.strip(), value.strip())
