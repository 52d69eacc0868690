"""BEHIND_TLS_PROXY: ``X-Forwarded-Proto: https`` from the proxy makes a request secure, and only then.

Each case loads production settings in a fresh interpreter and sends one request through Django's
whole middleware stack (the test client), as the proxy would forward it.
"""

import json

from crucible.tests.test_settings_modes import _run

HOST = "crucible.example.org"
REQUEST = f"""
import json, django
django.setup()
from django.test import Client
response = Client().get("/api/v1/evaluations/", HTTP_HOST="{HOST}", **json.loads(__import__("sys").argv[1]))
print(json.dumps({{
    "status": response.status_code,
    "location": response.get("Location", ""),
    "hsts": response.get("Strict-Transport-Security", ""),
    "csp": response.get("Content-Security-Policy", ""),
}}))
"""


def production(**env) -> dict:
    return {"CRUCIBLE_ENV": "production", "SECRET_KEY": "p" * 60, "ALLOWED_HOSTS": HOST, **env}


def forwarded(env: dict, headers: dict) -> dict:
    result = _run(env, REQUEST, json.dumps(headers))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_behind_the_proxy_a_request_forwarded_as_https_is_served_as_secure():
    response = forwarded(production(BEHIND_TLS_PROXY="true"), {"HTTP_X_FORWARDED_PROTO": "https"})
    assert response["status"] in (401, 403)  # served (sign in first), not redirected to https
    assert response["hsts"].startswith("max-age=")  # only ever sent on a secure request
    assert f"wss://{HOST}" in response["csp"]  # the page's WebSocket must use TLS too


def test_behind_the_proxy_a_plain_http_request_is_redirected_to_https():
    response = forwarded(production(BEHIND_TLS_PROXY="true"), {"HTTP_X_FORWARDED_PROTO": "http"})
    assert response["status"] == 301
    assert response["location"] == f"https://{HOST}/api/v1/evaluations/"


def test_without_the_setting_the_header_is_not_trusted():
    """Anyone can send the header; without a proxy that sets it, it must not make a request secure."""
    response = forwarded(production(), {"HTTP_X_FORWARDED_PROTO": "https"})
    assert response["status"] == 301
    assert response["location"] == f"https://{HOST}/api/v1/evaluations/"
    assert response["hsts"] == ""
