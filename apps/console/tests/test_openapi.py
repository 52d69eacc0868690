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


def test_every_operation_has_a_summary_and_shares_one_404_response(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    operations = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    ]
    assert [f"{method} {path}" for method, path, operation in operations if not operation.get("summary")] == []
    assert "not yours" in schema["components"]["responses"]["NotFound"]["description"]
    for method, path, operation in operations:
        if "{" in path:
            assert operation["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}, (method, path)


def test_the_list_documents_its_filters(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    parameters = yaml.safe_load(out.read_text())["paths"]["/api/v1/evaluations/"]["get"]["parameters"]
    names = {parameter["name"] for parameter in parameters}
    assert {"status", "q", "language", "label", "name", "owner", "created_after", "created_before"} <= names
