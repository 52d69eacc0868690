"""OpenAPI post-processing: a summary for every operation, and the 404 described once.

Summaries live here in one table (keyed by method and path) so the API reference reads as a list of
things one can do; a view's own ``extend_schema(summary=…)`` wins where it has one. Every operation on
a resource (a path with a parameter) answers 404 for what does not exist *or is not yours*; that is
one shared response (``#/components/responses/NotFound``), referenced rather than repeated.
"""

from __future__ import annotations

SUMMARIES = {
    ("get", "/api/v1/evaluations/"): "List your evaluations (filters: status, q, language, label, name, owner, dates)",
    ("post", "/api/v1/evaluations/"): "Submit a program to run in a sandbox",
    ("get", "/api/v1/evaluations/{id}/"): "Get an evaluation (full or 8+ character short id)",
    ("delete", "/api/v1/evaluations/{id}/"): "Cancel an evaluation (SIGTERM, then SIGKILL)",
    ("post", "/api/v1/evaluations/{id}/stop/"): "Emergency-stop an evaluation (SIGKILL now, alert, audit)",
    ("get", "/api/v1/evaluations/{id}/logs/"): "Read an evaluation's output chunks after a sequence number",
    ("get", "/api/v1/evaluations/{id}/results/"): "Get an evaluation's verdict and per-test results",
    ("get", "/api/v1/evaluations/{id}/artifacts/"): "List an evaluation's artifacts",
    ("get", "/api/v1/evaluations/{id}/artifacts/{name}"): "Download one artifact",
    ("get", "/api/v1/evaluations/{id}/callbacks/"): "List an evaluation's callback deliveries",
    ("get", "/api/v1/evaluations/{id}/samples/"): "Read an evaluation's resource samples",
    ("get", "/api/v1/batches/"): "List your batches",
    ("post", "/api/v1/batches/"): "Submit a batch of samples scored against tasks",
    ("get", "/api/v1/batches/{id}/"): "Get a batch's progress, counts and pass@k",
    ("delete", "/api/v1/batches/{id}/"): "Cancel what has not finished in a batch",
    ("get", "/api/v1/batches/{id}/results/"): "Per-sample, per-test results of a batch (JSON pages or JSONL)",
    ("get", "/api/v1/tasks/"): "List the tasks you may use",
    ("post", "/api/v1/tasks/"): "Create a task",
    ("get", "/api/v1/tasks/{slug}/"): "Get a task (a hidden test's code only for its owner)",
    ("put", "/api/v1/tasks/{slug}/"): "Replace a task (a new version if a batch used it)",
    ("patch", "/api/v1/tasks/{slug}/"): "Change part of a task (a new version if a batch used it)",
    ("get", "/api/v1/sandboxes/"): "List your sandboxes",
    ("post", "/api/v1/sandboxes/"): "Start a long-lived sandbox",
    ("get", "/api/v1/sandboxes/{id}/"): "Get a sandbox's status, limits and timings",
    ("delete", "/api/v1/sandboxes/{id}/"): "End a sandbox (its files are gone)",
    ("post", "/api/v1/sandboxes/{id}/exec/"): "Run a command in a sandbox",
    ("get", "/api/v1/sandboxes/{id}/execs/"): "Read a sandbox's transcript of steps",
    ("get", "/api/v1/sandboxes/{id}/files/"): "Read a file from a sandbox",
    ("put", "/api/v1/sandboxes/{id}/files/"): "Write a file into a sandbox",
    ("post", "/api/v1/sandboxes/{id}/stop/"): "Emergency-stop a sandbox (alert, audit)",
    ("get", "/api/v1/health/"): "Readiness: database, Redis, Docker engine, sandbox runtime",
    ("get", "/api/v1/health/live/"): "Liveness: the web process answers",
    ("get", "/api/v1/killswitch/"): "Is the kill switch engaged? (operators)",
    ("post", "/api/v1/killswitch/"): "Engage or release the kill switch (operators)",
    ("get", "/api/v1/me/"): "Who am I: user, role and quota",
    ("post", "/api/v1/me/webhook-secret/"): "Make a new webhook secret (returned once)",
    ("get", "/api/v1/metrics/"): "Prometheus metrics (operators)",
    ("get", "/api/v1/runtimes/"): "List the runtimes a program can run in",
    ("get", "/api/v1/incidents/"): "List safety incidents (operators: all; owners: their runs')",
    ("get", "/api/v1/incidents/{id}/"): "Get a safety incident: status, severity, timeline",
    ("patch", "/api/v1/incidents/{id}/"): "Change an incident's status, with a comment (operators)",
    ("post", "/api/v1/incidents/{id}/release/"): "Release an incident's quarantine (operators)",
    ("get", "/api/v1/incidents/{id}/report/"): "Download an incident's report as JSON or Markdown (operators)",
    ("get", "/api/v1/incidents/{id}/files/"): "Download a file kept from a stopped session (operators, audited)",
}

NOT_FOUND = {
    "description": "No such resource, or not yours: another user's evaluation, batch, sandbox or private "
    "task is a 404 exactly as if it did not exist (never a 403 that would confirm it does).",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}, "error": {"type": "string"}},
                "required": ["detail"],
            }
        }
    },
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def polish(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOKS entry: fill in summaries, share the 404 response."""
    result.setdefault("components", {}).setdefault("responses", {})["NotFound"] = NOT_FOUND
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            if not operation.get("summary") and (method, path) in SUMMARIES:
                operation["summary"] = SUMMARIES[(method, path)]
            if "{" in path:
                operation.setdefault("responses", {}).setdefault("404", {"$ref": "#/components/responses/NotFound"})
    return result
