"""The CSP and the other security headers, on a page, an API response and an error."""

import os
import re
import subprocess
import sys

import pytest

from apps.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


def directives(response):
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def assert_secure_headers(response):
    csp = directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["img-src"] == ["'self'", "data:"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["form-action"] == ["'self'"]
    assert "'self'" in csp["connect-src"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


def test_a_page_has_them(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert_secure_headers(response)
    assert "ws://testserver" in directives(response)["connect-src"]


def test_an_api_response_has_them(client):
    response = client.get("/api/v1/health/")
    assert_secure_headers(response)


def test_a_404_has_them_too(client):
    assert_secure_headers(client.get("/no/such/page/"))


def test_hsts_and_wss_when_served_over_https(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_SSL_REDIRECT = False
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "wss://testserver" in directives(response)["connect-src"]
    assert "upgrade-insecure-requests" in response["Content-Security-Policy"]


def test_no_hsts_over_plain_http(client):
    assert "Strict-Transport-Security" not in client.get("/accounts/login/")


def test_pages_carry_no_inline_script_or_style(client, alice):
    client.force_login(alice)
    for url in ("/api-tokens/", "/accounts/email/", "/accounts/password/change/"):
        html = client.get(url).content.decode()
        assert "<style" not in html
        assert " style=" not in html
        for chunk in html.split("<script")[1:]:
            head = chunk.split(">", 1)[0]
            assert "src=" in head or "application/json" in head, f"inline script on {url}"


def test_production_cookies_are_secure_and_hsts_on():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "SESSION_", "CSRF_", "DJANGO_"))}
    env.update(CRUCIBLE_ENV="production", SECRET_KEY="s" * 50, DJANGO_SETTINGS_MODULE="crucible.settings")
    script = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.DEBUG, "
        "s.SECURE_HSTS_SECONDS > 0, s.SECURE_SSL_REDIRECT)"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "False", "True", "True"]


def test_an_unknown_api_url_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"] == "Not found."


def test_a_page_404_is_the_house_page(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_a_server_error_shows_no_stack_trace(rf):
    from apps.accounts import errors

    page = errors.server_error(rf.get("/somewhere/"))
    assert page.status_code == 500
    assert b"Traceback" not in page.content
    assert b"Something went wrong" in page.content
    api = errors.server_error(rf.get("/api/v1/evaluations/"))
    assert api.status_code == 500
    assert api["Content-Type"] == "application/json"


def test_the_api_docs_page_loads_its_assets_from_our_own_static_files_under_the_strict_policy(client, alice):
    client.force_login(alice)
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"cdn.jsdelivr.net" not in response.content
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in response.content
    csp = directives(response)
    assert csp["script-src"] == ["'self'"]


def test_an_unknown_host_is_a_400_not_a_500(client):
    response = client.get("/accounts/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert "Content-Security-Policy" in response


def test_a_too_large_form_body_is_a_413_that_says_so(client, alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    client.force_login(alice)
    response = client.post("/api-tokens/", {"name": "x" * 5000})
    assert response.status_code == 413
    page = response.content.decode()
    assert "Request too large" in page and re.search(r"1\.00\s+KiB", page)
    assert "Content-Security-Policy" in response
    assert not ApiToken.objects.filter(user=alice).exists()


def test_a_too_large_form_body_to_the_api_is_a_413_in_json(client, olivia, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    client.force_login(olivia)
    response = client.post("/api/v1/killswitch/", {"engaged": "x" * 5000})
    assert response.status_code == 413
    assert response.json()["detail"] == "Request body too large."


@pytest.mark.parametrize(
    "url", ["/admin/", "/admin/accounts/quota/add/", "/admin/accounts/apitoken/", "/admin/audit/auditevent/"]
)
def test_admin_pages_need_no_inline_script(client, olivia, url):
    import re

    olivia.is_superuser = True
    olivia.save()
    client.force_login(olivia)
    response = client.get(url)
    assert response.status_code == 200
    inline = [tag for tag in re.findall(r"<script[^>]*>", response.content.decode()) if "src=" not in tag]
    assert [tag for tag in inline if "json" not in tag] == []
