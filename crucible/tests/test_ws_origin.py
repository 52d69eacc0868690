"""Cross-site WebSocket hijacking: a browser's WebSocket is served only from this site's own origin.

The origin is scheme, host and port: a page on http://127.0.0.1:9999/ is another site than the one
on http://127.0.0.1:8000/, although the browser sends the session cookie of 127.0.0.1 to both.
A refused handshake ends before any consumer runs (HTTP 403), so nothing of the stream leaks.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from apps.accounts.models import ApiToken
from apps.evaluations.tests.factories import make_evaluation
from crucible.tests.ws import open_socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_consumer_connections():
    """The consumer's database thread keeps its connection; close it so the test database can go."""
    yield
    await database_sync_to_async(connections.close_all)()


async def alices_stream(alice) -> str:
    evaluation = await database_sync_to_async(make_evaluation)(alice)
    return f"/ws/evaluations/{evaluation.pk}/"


async def assert_refused(path, user, origin, **kwargs):
    communicator, connected = await open_socket(path, user=user, origin=origin, **kwargs)
    assert not connected, f"{origin} was let in"
    await communicator.disconnect()


async def assert_served(path, user, origin, **kwargs):
    communicator, connected = await open_socket(path, user=user, origin=origin, **kwargs)
    assert connected, f"{origin} was refused"
    assert (await communicator.receive_json_from(timeout=5))["type"] in ("status", "alerts")
    await communicator.disconnect()


async def test_a_page_on_another_port_of_the_same_host_cannot_open_alices_stream(alice):
    await assert_refused(await alices_stream(alice), alice, "http://127.0.0.1:9999")


async def test_a_page_on_another_port_of_the_same_host_cannot_open_the_operators_alert_feed(olivia):
    await assert_refused("/ws/alerts/", olivia, "http://127.0.0.1:9999")


async def test_a_page_on_another_scheme_of_the_same_host_and_port_is_refused(alice):
    path = await alices_stream(alice)
    await assert_refused(path, alice, "https://127.0.0.1:8000")
    await assert_refused(path, alice, "https://127.0.0.1")


async def test_a_page_on_the_default_port_of_the_same_host_is_refused(alice):
    await assert_refused(await alices_stream(alice), alice, "http://127.0.0.1")


async def test_another_allowed_host_on_the_same_port_is_another_site(alice):
    """localhost and 127.0.0.1 are both allowed hosts, but a page on one is not the other's site."""
    await assert_refused(await alices_stream(alice), alice, "http://localhost:8000")


async def test_null_and_garbage_origins_are_refused(olivia):
    for origin in ("null", "file://", "127.0.0.1:8000", "http://", "http://127.0.0.1:notaport", "ftp://127.0.0.1:8000"):
        await assert_refused("/ws/alerts/", olivia, origin)


async def test_a_host_that_is_not_allowed_is_refused_even_when_origin_matches_it(olivia):
    await assert_refused("/ws/alerts/", olivia, "http://evil.example:8000", host="evil.example:8000")


async def test_the_sites_own_origin_is_served(alice, olivia):
    await assert_served(await alices_stream(alice), alice, "http://127.0.0.1:8000")
    await assert_served("/ws/alerts/", olivia, "http://127.0.0.1:8000")
    await assert_served("/ws/alerts/", olivia, "HTTP://127.0.0.1:8000")  # origins are case-insensitive


async def test_the_default_port_may_be_left_out_on_both_sides(olivia):
    await assert_served("/ws/alerts/", olivia, "http://localhost", host="localhost")
    await assert_served("/ws/alerts/", olivia, "http://localhost:80", host="localhost")


async def test_a_forwarded_scheme_counts_only_behind_the_tls_proxy(olivia, settings):
    """Without BEHIND_TLS_PROXY anyone can send X-Forwarded-Proto: the connection is plain ws, so the
    site is http://localhost and an https page is another site."""
    settings.SECURE_PROXY_SSL_HEADER = None
    forged = [(b"x-forwarded-proto", b"https")]
    await assert_refused("/ws/alerts/", olivia, "https://localhost", host="localhost", headers=forged)


async def test_behind_the_tls_proxy_the_forwarded_scheme_counts(olivia, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    await assert_served("/ws/alerts/", olivia, "https://localhost", host="localhost", headers=proxied)
    await assert_refused("/ws/alerts/", olivia, "http://localhost", host="localhost", headers=proxied)


async def test_csrf_trusted_origins_are_served_by_scheme_host_and_port(olivia, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.org", "http://*.lab.example:8080"]
    await assert_served("/ws/alerts/", olivia, "https://console.example.org")
    await assert_served("/ws/alerts/", olivia, "http://ops.lab.example:8080")
    await assert_refused("/ws/alerts/", olivia, "http://console.example.org")
    await assert_refused("/ws/alerts/", olivia, "https://console.example.org:8443")
    await assert_refused("/ws/alerts/", olivia, "http://ops.lab.example:8081")
    await assert_refused("/ws/alerts/", olivia, "http://lab.example.evil:8080")


async def test_a_script_without_origin_is_served_with_its_token(alice):
    """The CLI is not a browser: no Origin, and a token header that no web page can set."""
    _token, key = await database_sync_to_async(ApiToken.issue)(alice, "cli")
    communicator, connected = await open_socket(await alices_stream(alice), token=key, origin=None)
    assert connected
    assert (await communicator.receive_json_from(timeout=5))["type"] == "status"
    await communicator.disconnect()
