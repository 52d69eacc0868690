"""The settings module itself, loaded in a fresh interpreter with a given environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict, code: str, *argv: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with this process's environment plus ``env`` (no data/local.env)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "CRUCIBLE_ENV", "DEBUG")}
    clean.update({"DJANGO_SETTINGS_MODULE": "crucible.settings", "CRUCIBLE_DATA_DIR": "/nonexistent-crucible-data"})
    clean.update(env)
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_production_without_a_secret_key_refuses_to_start():
    result = _run({"CRUCIBLE_ENV": "production"}, "import django; django.setup()")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_debug_is_off_unless_asked():
    result = _run(
        {"CRUCIBLE_ENV": "production", "SECRET_KEY": "k" * 60},
        "from django.conf import settings; print(settings.DEBUG, settings.SESSION_COOKIE_SECURE)",
    )
    assert result.stdout.split() == ["False", "True"]


def test_a_bad_boolean_stops_the_settings_from_loading():
    result = _run({"CRUCIBLE_ENV": "development", "DEBUG": "maybe"}, "import django; django.setup()")
    assert result.returncode != 0
    assert "DEBUG='maybe'" in result.stderr


def test_deploy_check_with_production_settings_reports_nothing_serious():
    env = {
        "CRUCIBLE_ENV": "production",
        "SECRET_KEY": "a-long-random-production-secret-" + "q8Zr" * 12,
        "ALLOWED_HOSTS": "crucible.example.org",
    }
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "CRUCIBLE_ENV", "DEBUG")}
    clean.update(env, CRUCIBLE_DATA_DIR="/nonexistent-crucible-data")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_requests_do_not_keep_database_connections_by_default():
    """Under Daphne each request may run on another pool thread; kept connections piled up until
    PostgreSQL refused new ones (the 20-client load test got 500s). Operators may still opt in."""
    code = "from django.conf import settings; print(settings.DATABASES['default']['CONN_MAX_AGE'])"
    assert _run({"CRUCIBLE_ENV": "development"}, code).stdout.strip() == "0"
    assert _run({"CRUCIBLE_ENV": "development", "DATABASE_CONN_MAX_AGE": "30"}, code).stdout.strip() == "30"


def test_the_old_sign_in_throttle_variable_stops_the_settings_with_the_new_names():
    env = {"CRUCIBLE_ENV": "development", "LOGIN_FAILED_RATE_LIMIT": "10/m/ip"}
    result = _run(env, "import django; django.setup()")
    assert result.returncode != 0
    assert "SIGNIN_IP_LIMIT" in result.stderr


def test_a_malformed_sign_in_limit_stops_the_settings():
    env = {"CRUCIBLE_ENV": "development", "SIGNIN_ACCOUNT_LIMIT": "50 per hour"}
    result = _run(env, "import django; django.setup()")
    assert result.returncode != 0
    assert "SIGNIN_ACCOUNT_LIMIT='50 per hour'" in result.stderr


def test_behind_a_tls_proxy_the_throttles_count_the_forwarded_address():
    code = "from django.conf import settings; print(settings.ALLAUTH_TRUSTED_PROXY_COUNT)"
    assert _run({"CRUCIBLE_ENV": "development"}, code).stdout.strip() == "0"
    assert _run({"CRUCIBLE_ENV": "development", "BEHIND_TLS_PROXY": "true"}, code).stdout.strip() == "1"
    assert _run({"CRUCIBLE_ENV": "development", "TRUSTED_PROXY_COUNT": "2"}, code).stdout.strip() == "2"
