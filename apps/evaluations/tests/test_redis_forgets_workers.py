"""Redis restarted empty (or flushed) under running workers: they register again by themselves, health
says ready again, and work goes on."""

from __future__ import annotations

import django_rq
import pytest
import requests
from rq import Worker

from apps.accounts.models import ApiToken
from tests.stack import live_stack, wait_until  # noqa: F401 (the fixture)

live = pytest.mark.django_db(transaction=True)


def listed_workers() -> set[str]:
    return {worker.name for worker in Worker.all(connection=django_rq.get_connection("default"))}


@live
def test_after_redis_forgets_everything_the_worker_registers_again_and_alices_run_succeeds(  # noqa: F811
    live_stack,  # noqa: F811
    alice,
    olivia,
    client,
):
    token = ApiToken.issue(alice, "flush")[1]
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    assert live_stack.worker_name in listed_workers()

    django_rq.get_connection("default").flushdb()
    assert live_stack.worker_name not in listed_workers()
    assert requests.get(live_stack.url + "/api/v1/health/live/", timeout=10).status_code == 200

    wait_until(lambda: live_stack.worker_name in listed_workers(), timeout=60, what="the worker to register again")
    health = requests.get(live_stack.url + "/api/v1/health/", timeout=30)
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["workers"] == "ok"
    # What an operator looks at after a Redis restart: the dashboard and django-rq's own page.
    client.force_login(olivia)
    dashboard = client.get("/monitoring/").content.decode()
    assert f'data-worker="{live_stack.worker_name}" data-alive="true"' in dashboard
    assert "No worker has sent a heartbeat lately" not in dashboard
    assert live_stack.worker_name in client.get("/admin/django-rq/workers/0/").content.decode()

    submitted = http.post(
        live_stack.url + "/api/v1/evaluations/", json={"code": "print('after the flush')"}, timeout=30
    )
    assert submitted.status_code == 201, submitted.text
    url = f"{live_stack.url}/api/v1/evaluations/{submitted.json()['id']}/"
    done = wait_until(
        lambda: (body := http.get(url, timeout=10).json())["status"] not in ("queued", "running") and body,
        timeout=120,
        what="the run to end",
    )
    assert done["status"] == "succeeded", done
