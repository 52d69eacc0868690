"""The health endpoints answered before Django (apps/console/probes.py): the same answer as the views,
from the web server's event loop, for plain probes only; everything else is still Django's."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.testing import HttpCommunicator

from apps.console import health, probes
from apps.console.tests.test_health import registered_worker
from crucible.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

READY = "/api/v1/health/"
LIVE = "/api/v1/health/live/"


@pytest.fixture
def a_live_worker():
    worker = registered_worker()
    yield worker
    worker.register_death()


async def ask(path: str, *, method: str = "GET", headers: dict | None = None, query: str = "", app=application):
    """One request through the ASGI application as Daphne would make it; (status, headers, body)."""
    sent = {"host": "testserver", **(headers or {})}
    communicator = HttpCommunicator(
        app,
        method,
        path + (f"?{query}" if query else ""),
        headers=[(name.encode(), value.encode()) for name, value in sent.items()],
    )
    response = await communicator.get_response(timeout=30)
    return response["status"], {k.decode().lower(): v.decode() for k, v in response["headers"]}, response["body"]


def answered_by_the_probe(headers: dict) -> bool:
    return headers.get("content-security-policy") == probes.CONTENT_SECURITY_POLICY


async def test_a_load_balancers_readiness_probe_gets_the_views_answer_without_django(a_live_worker, anonymous_api):
    status, headers, body = await ask(READY)
    assert answered_by_the_probe(headers)
    view = await asyncio.to_thread(anonymous_api.get, READY, HTTP_HOST="testserver")
    assert (status, json.loads(body)) == (view.status_code, view.json())
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)


async def test_a_readiness_probe_without_a_live_worker_is_503_and_names_workers(anonymous_api):
    status, headers, body = await ask(READY)
    assert answered_by_the_probe(headers)
    assert status == 503
    assert "workers" in json.loads(body)["failing"]


async def test_a_liveness_probe_is_200_with_nothing_else_up():
    status, headers, body = await ask(LIVE)
    assert answered_by_the_probe(headers)
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert "cache-control" not in headers  # as the view: liveness may be cached


@pytest.mark.parametrize("path", [READY, LIVE])
async def test_the_probes_answer_carries_the_security_headers_of_every_answer(path, a_live_worker):
    _, headers, _ = await ask(path)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-resource-policy"] == "same-origin"
    assert "camera=()" in headers["permissions-policy"]
    assert "strict-transport-security" not in headers  # plain HTTP


async def test_a_head_probe_gets_the_headers_and_no_body(a_live_worker):
    status, headers, body = await ask(READY, method="HEAD")
    assert (status, body) == (200, b"")
    assert answered_by_the_probe(headers) and int(headers["content-length"]) > 0


async def test_probes_that_arrive_together_share_one_assessment(a_live_worker, monkeypatch):
    calls = []

    def slow_report():
        calls.append(time.monotonic())
        time.sleep(0.3)
        return 200, {"status": "ok"}

    monkeypatch.setattr(health, "report", slow_report)
    answers = await asyncio.gather(*(ask(READY) for _ in range(5)))
    assert [status for status, _, _ in answers] == [200] * 5
    assert len(calls) == 1
    await ask(READY)  # a probe after them is assessed anew
    assert len(calls) == 2


async def test_should_the_probes_thread_fail_djangos_view_answers_instead(a_live_worker, monkeypatch):
    async def broken():
        raise RuntimeError("the probe's thread is gone")

    monkeypatch.setattr(probes, "_readiness", broken)
    status, headers, body = await ask(READY)
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert not answered_by_the_probe(headers)


# --- what stays Django's ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        {"headers": {"accept": "text/html"}},  # a browser: the browsable API
        {"query": "format=api"},
        {"query": "x=1"},
        {"method": "POST"},
        {"method": "OPTIONS"},
        {"headers": {"host": "evil.example"}},  # not an allowed host: Django's 400
        {"headers": {"accept": "application/xml"}},  # Django's 406
    ],
    ids=["browser", "format", "query", "post", "options", "bad-host", "xml"],
)
@pytest.mark.parametrize("path", [READY, LIVE])
async def test_anything_but_a_plain_probe_is_answered_by_django(path, request_, a_live_worker):
    status, headers, _ = await ask(path, **request_)
    assert not answered_by_the_probe(headers)
    assert status in {200, 400, 405, 406}


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/json; q=1.0, */*;q=0.5", "application/*"])
async def test_a_probe_that_accepts_json_is_answered_here(accept, a_live_worker):
    _, headers, _ = await ask(LIVE, headers={"accept": accept})
    assert answered_by_the_probe(headers)


async def test_other_paths_go_to_django_untouched():
    status, headers, _ = await ask("/api/v1/health/live/extra/")
    assert status == 404 and not answered_by_the_probe(headers)


async def test_where_http_is_redirected_a_plain_http_probe_is_left_to_djangos_redirect(settings):
    settings.SECURE_SSL_REDIRECT = True  # (Django's middleware read it at start-up: this checks only who answers)
    _, headers, _ = await ask(LIVE)
    assert not answered_by_the_probe(headers)


async def test_behind_the_tls_proxy_an_https_probe_is_answered_here_with_hsts(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    status, headers, _ = await ask(LIVE, headers={"x-forwarded-proto": "https"})
    assert status == 200 and answered_by_the_probe(headers)
    assert headers["strict-transport-security"].startswith("max-age=3600")


def test_a_plain_probe_never_reaches_the_application_behind():
    reached = []

    async def django(scope, receive, send):
        reached.append(scope["path"])

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": LIVE, "query_string": b"", "headers": [(b"host", b"localhost")]}
    asyncio.run(probes.probes_first(django)(scope, None, send))
    assert reached == [] and sent[0]["status"] == 200
    asyncio.run(probes.probes_first(django)(dict(scope, method="POST"), None, send))
    assert reached == [LIVE]
