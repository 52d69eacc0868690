"""GET /api/v1/metrics/: Prometheus text computed from the database and Redis; operators or the scrape token."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.evaluations.tests.factories import make_evaluation
from apps.evaluations.tests.helpers import run_and_wait, submit
from apps.evaluations.worker import warm_profiles
from apps.monitoring.models import RunTiming
from apps.sandboxing import pool

URL = "/api/v1/metrics/"


def scrape(api) -> dict:
    response = api.get(URL)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_metrics_change_as_evaluations_run(alice_api, olivia_api, empty_queues):
    before = scrape(olivia_api)
    submit(alice_api, code="print(1)")
    queued = scrape(olivia_api)
    assert value(queued, "crucible_evaluations_submitted_total", language="python") == (
        value(before, "crucible_evaluations_submitted_total", language="python") + 1
    )
    assert value(queued, "crucible_evaluations_queued") == value(before, "crucible_evaluations_queued") + 1
    assert value(queued, "crucible_queue_depth", queue="default") >= 1

    run_and_wait(alice_api, code="import sys; sys.exit(2)")
    after = scrape(olivia_api)
    assert value(after, "crucible_evaluations_finished_total", status="succeeded", language="python") == 1
    assert value(after, "crucible_evaluations_finished_total", status="failed", language="python") == 1
    assert value(after, "crucible_evaluations_running") == 0
    assert value(after, "crucible_queue_depth", queue="default") == 0
    assert value(after, "crucible_evaluation_duration_seconds_count", language="python") == 2
    assert value(after, "crucible_evaluation_duration_seconds_bucket", language="python", le="+Inf") == 2
    assert value(after, "crucible_evaluation_queue_wait_seconds_count") == 2
    assert value(after, "crucible_sandbox_start_seconds_count", start="cold") == 2
    assert value(after, "crucible_sandbox_start_seconds_sum", start="cold") > 0


@pytest.mark.django_db
def test_alerts_are_counted_by_rule(olivia_api):
    import uuid

    from apps.monitoring.alerts import raise_alert

    for _ in range(2):
        raise_alert(evaluation_id=uuid.uuid4(), rule_name="fork-bomb", severity="critical", message="m")
    samples = scrape(olivia_api)
    assert value(samples, "crucible_alerts_total", rule="fork-bomb", severity="critical") == 2
    assert value(samples, "crucible_alerts_unacknowledged") == 2


@pytest.mark.django_db
def test_researchers_and_anonymous_visitors_are_refused(alice_api, anonymous_api):
    assert alice_api.get(URL).status_code == 403
    assert anonymous_api.get(URL).status_code in (401, 403)


@pytest.mark.django_db
def test_the_scrape_token_is_accepted_and_a_wrong_one_is_not(anonymous_api, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert anonymous_api.get(URL, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
    assert anonymous_api.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code in (401, 403)
    assert anonymous_api.get(URL, HTTP_AUTHORIZATION="Bearer").status_code in (401, 403)


@pytest.mark.django_db
def test_no_token_configured_means_no_bearer_access(anonymous_api, settings):
    settings.METRICS_TOKEN = ""
    assert anonymous_api.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code in (401, 403)


@pytest.mark.django_db
def test_an_operator_with_a_personal_token_may_scrape(olivia):
    from rest_framework.test import APIClient

    from apps.accounts.models import ApiToken

    _, key = ApiToken.issue(olivia, "prometheus")
    client = APIClient()
    assert client.get(URL, HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_the_runtime_sandboxes_get_is_a_metric(olivia_api, settings):
    settings.SANDBOX_RUNTIME = "auto"
    samples = scrape(olivia_api)
    assert value(samples, "crucible_sandbox_runtime", configured="auto", runtime="runsc", gvisor="1") == 1
    settings.SANDBOX_RUNTIME = "runc"
    samples = scrape(olivia_api)
    assert value(samples, "crucible_sandbox_runtime", configured="runc", runtime="runc", gvisor="0") == 1


@pytest.mark.docker
def test_warm_pools_and_warm_starts_are_metrics(olivia_api, alice, settings):
    settings.SANDBOX_POOL_SIZE = 1
    owner = f"pooled-{uuid.uuid4().hex[:8]}"
    pool.WarmPool(owner, 1, warm_profiles).refill_once()
    warm_run, cold_run = make_evaluation(alice, status="succeeded"), make_evaluation(alice, status="succeeded")
    RunTiming.objects.create(evaluation_id=warm_run.pk, sandbox_start_ms=12, warm=True)
    RunTiming.objects.create(evaluation_id=cold_run.pk, sandbox_start_ms=640, warm=False)
    try:
        samples = scrape(olivia_api)
    finally:
        pool.remove_pools_of(owner)
    assert value(samples, "crucible_warm_pool_idle", worker=owner) == 1
    assert value(samples, "crucible_warm_pool_size") == 1
    assert value(samples, "crucible_sandbox_start_seconds_count", start="warm") == 1
    assert value(samples, "crucible_sandbox_start_seconds_bucket", start="warm", le="0.1") == 1
    assert value(samples, "crucible_sandbox_start_seconds_bucket", start="cold", le="0.5") == 0
