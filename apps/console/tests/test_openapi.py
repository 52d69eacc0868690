"""The OpenAPI document covers the whole public contract and builds without a single warning."""

import pytest
import yaml
from django.core.management import call_command


def test_the_schema_builds_and_validates_with_no_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    for path in [
        "/api/v1/evaluations/",
        "/api/v1/evaluations/{id}/",
        "/api/v1/evaluations/{id}/stop/",
        "/api/v1/evaluations/{id}/logs/",
        "/api/v1/evaluations/{id}/results/",
        "/api/v1/evaluations/{id}/artifacts/",
        "/api/v1/health/",
        "/api/v1/killswitch/",
    ]:
        assert path in paths, path


@pytest.mark.parametrize("path", ["/api/v1/evaluations/{id}/logs/", "/api/v1/killswitch/"])
def test_endpoints_document_their_responses(tmp_path, path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    operations = yaml.safe_load(out.read_text())["paths"][path]
    for operation in operations.values():
        assert "application/json" in operation["responses"]["200"]["content"]
