"""Two checkouts on one machine (scripts/local_env.sh, run by `make run`/`make test`): each gets its
own database, role and password, Redis port and container label, and setting up one never breaks
the other. Runs the real script against the machine's PostgreSQL; the roles and databases are dropped after.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local_env.sh"
pytestmark = pytest.mark.skipif(not Path("/usr/bin/psql").exists(), reason="needs PostgreSQL")


def setting(data: Path, name: str) -> str:
    return re.search(rf"^{name}=(.*)$", (data / "local.env").read_text(), re.MULTILINE)[1]


def set_up(checkout: Path) -> Path:
    checkout.mkdir(parents=True, exist_ok=True)
    data = checkout / "data"
    out = subprocess.run(["bash", str(SCRIPT), str(checkout), str(data)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return data


def connects(data: Path) -> bool:
    url = setting(data, "DATABASE_URL").replace("postgres://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("select current_user, current_database()").fetchone() == (
            urlparse(url).username,
            urlparse(url).path.lstrip("/"),
        )


def drop(data: Path) -> None:
    url = urlparse(setting(data, "DATABASE_URL"))
    for sql in (f"DROP DATABASE IF EXISTS {url.path.lstrip('/')}", f"DROP ROLE IF EXISTS {url.username}"):
        subprocess.run(["su", "postgres", "-c", f'psql -qc "{sql}"'], capture_output=True, cwd="/tmp")


@pytest.fixture
def two_checkouts(tmp_path):
    made = []

    def make(name: str) -> Path:
        data = set_up(tmp_path / name / "crucible")
        made.append(data)
        return data

    yield make
    for data in made:
        drop(data)


def test_two_checkouts_get_their_own_database_role_redis_port_and_label(two_checkouts):
    mine = two_checkouts("alice")
    with socket.socket() as redis_of_mine:  # my checkout's Redis is up when the other one is set up
        redis_of_mine.bind(("127.0.0.1", urlparse(setting(mine, "REDIS_URL")).port))
        redis_of_mine.listen()
        theirs = two_checkouts("bob")

    mine_db, theirs_db = urlparse(setting(mine, "DATABASE_URL")), urlparse(setting(theirs, "DATABASE_URL"))
    assert mine_db.username != theirs_db.username and mine_db.path != theirs_db.path
    assert mine_db.password != theirs_db.password
    assert urlparse(setting(mine, "REDIS_URL")).port != urlparse(setting(theirs, "REDIS_URL")).port
    assert setting(mine, "CRUCIBLE_INSTANCE") != setting(theirs, "CRUCIBLE_INSTANCE")
    # Setting up the second did not change the first's password: both still connect, each to its own.
    assert connects(mine) and connects(theirs)
    assert (mine / "local.env").stat().st_mode & 0o077 == 0


def test_setting_a_checkout_up_again_changes_nothing(two_checkouts):
    data = two_checkouts("alice")
    before = (data / "local.env").read_text()
    set_up(data.parent)
    assert (data / "local.env").read_text() == before
    assert connects(data)
