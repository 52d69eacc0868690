"""data/local.env: the set-up script's file fills in what the real environment does not set.

Loaded by the settings module in a fresh interpreter, as every process of the stack loads it.
"""

import os
import subprocess
import sys

from crucible.tests.test_settings_modes import ROOT

SHOW = (
    "from django.conf import settings; "
    "print(settings.QUOTA_MAX_ACTIVE, settings.QUOTA_SUBMISSIONS_PER_MINUTE, settings.DATABASE_URL, settings.DEBUG)"
)
LOCAL_ENV = """\
# written by scripts/setup.sh
SECRET_KEY=from-the-file-{filler}

QUOTA_MAX_ACTIVE=7
 QUOTA_SUBMISSIONS_PER_MINUTE = 11
DATABASE_URL=postgres://crucible:p=a=s@127.0.0.1:5432/crucible?sslmode=disable
a line without an equals sign
""".format(filler="k" * 50)


FILE_KEYS = ("SECRET_KEY", "QUOTA_MAX_ACTIVE", "QUOTA_SUBMISSIONS_PER_MINUTE", "DATABASE_URL", "CRUCIBLE_ENV", "DEBUG")


def _run(env: dict, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose environment sets none of the file's keys unless ``env`` does.

    (This test process has loaded the real data/local.env into its own environment.)
    """
    clean = {k: v for k, v in os.environ.items() if k not in FILE_KEYS}
    clean.update(env, DJANGO_SETTINGS_MODULE="crucible.settings")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def settings_with(tmp_path, env: dict) -> list[str]:
    (tmp_path / "local.env").write_text(LOCAL_ENV)
    result = _run({"CRUCIBLE_DATA_DIR": str(tmp_path), **env}, SHOW)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_file_fills_in_what_the_environment_does_not_set(tmp_path):
    # Production refuses to start without SECRET_KEY: here it comes from the file alone.
    max_active, per_minute, database_url, debug = settings_with(tmp_path, {"CRUCIBLE_ENV": "production"})
    assert (max_active, per_minute, debug) == ("7", "11", "False")
    assert database_url == "postgres://crucible:p=a=s@127.0.0.1:5432/crucible?sslmode=disable"  # split at the first =


def test_the_real_environment_wins_over_the_file(tmp_path):
    env = {"CRUCIBLE_ENV": "production", "QUOTA_MAX_ACTIVE": "3", "DATABASE_URL": "postgres://ops@db.internal/crucible"}
    max_active, per_minute, database_url, _ = settings_with(tmp_path, env)
    assert (max_active, per_minute, database_url) == ("3", "11", "postgres://ops@db.internal/crucible")


def test_without_the_file_the_defaults_apply(tmp_path):
    result = _run({"CRUCIBLE_DATA_DIR": str(tmp_path), "CRUCIBLE_ENV": "development"}, SHOW)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["10", "30"]
