"""The shapes the API returns, as TypedDicts (responses stay plain dicts: print them, store them as JSON).

Fields follow contract v1/v2 (docs: ``/api/v1/schema/``). ``total=False``: a newer server may add
fields and an older one may lack some; read optional ones with ``.get``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

EvaluationStatus = Literal[
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "oom_killed",
    "cancelled",
    "stopped",
    "safety_stopped",
    "error",
]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}
)
BatchStatus = Literal["queued", "running", "completed", "cancelled"]
FINAL_BATCH_STATUSES: frozenset[str] = frozenset({"completed", "cancelled"})
SandboxStatus = Literal["starting", "ready", "ended"]
ExecError = Literal[
    "not_found", "permission_denied", "bad_cwd", "user_unsupported", "too_many_processes", "interrupted"
]


class Limits(TypedDict, total=False):
    timeout_s: float
    memory_mb: int
    cpus: float
    pids: int
    output_cap_bytes: int


class Evaluation(TypedDict, total=False):
    id: str
    status: EvaluationStatus
    language: str
    priority: str
    owner: str
    metadata: dict[str, Any]
    limits_requested: Limits
    limits: Limits
    reason: str | None
    exit_code: int | None
    signal: int | None
    error: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    output_truncated: bool
    output_bytes: int
    peak_memory_bytes: int | None
    cpu_time_ms: int | None
    code_sha256: str
    image_digest: str
    sandbox_runtime: str
    timeout_s: float
    memory_mb: int
    cpus: float
    callback_url: str | None
    batch: str | None
    task: str | None
    passed: bool | None
    rerun_of: str | None
    code: str
    stdin: str


class TestResult(TypedDict, total=False):
    name: str
    category: str
    passed: bool
    status: str
    duration_ms: int | None
    exit_code: int | None
    message: str
    detail: str | None


class EvaluationResults(TypedDict, total=False):
    id: str
    status: EvaluationStatus
    reason: str | None
    exit_code: int | None
    signal: int | None
    error: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    output_truncated: bool
    output_bytes: int
    peak_memory_bytes: int | None
    cpu_time_ms: int | None
    image_digest: str
    sandbox_runtime: str
    passed: bool | None
    tests: list[TestResult] | None


class LogChunk(TypedDict):
    seq: int
    stream: Literal["stdout", "stderr"]
    data: str
    ts: str


class LogPage(TypedDict):
    chunks: list[LogChunk]
    next: int
    complete: bool


class Artifact(TypedDict, total=False):
    name: str
    size: int
    sha256: str
    created_at: str


class Batch(TypedDict, total=False):
    id: str
    owner: str
    task: str | None
    samples_are: Literal["programs", "completions"]
    k: list[int]
    reuse: str
    priority: str
    callback_url: str | None
    metadata: dict[str, Any]
    created_at: str
    finished_at: str | None
    status: BatchStatus
    total: int
    ended: int
    counts: dict[str, int]
    passed: int
    pass_at_k: dict[str, float | None]
    pass_at_k_not_computable: dict[str, str]
    tasks: dict[str, dict[str, int]]


class SampleResult(TypedDict, total=False):
    evaluation: str
    sample: int | None
    task: str
    task_version: int
    status: str
    reason: str | None
    passed: bool | None
    duration_ms: int | None
    tests: list[TestResult]


class Task(TypedDict, total=False):
    slug: str
    version: int
    title: str
    prompt: str
    language: str
    entry_point: str
    timeout_s: float
    memory_mb: int
    public: bool
    source: str
    owner: str
    created_at: str
    tests_count: int
    tests_visible: bool
    tests: list[dict[str, Any]]


class SandboxLimits(TypedDict):
    exec_timeout_s_default: float
    exec_timeout_s_max: float
    output_cap_bytes: int
    file_max_bytes: int


class Sandbox(TypedDict, total=False):
    id: str
    status: SandboxStatus
    end_reason: str | None
    error: str
    owner: str
    language: str
    image: str
    sandbox_runtime: Literal["runc", "runsc"]
    memory_mb: int
    cpus: float
    idle_timeout_s: int
    max_lifetime_s: int
    metadata: dict[str, Any]
    cwd: str
    user: str
    created_at: str
    ready_at: str | None
    ended_at: str | None
    last_activity_at: str | None
    expires_at: str | None
    step_count: int
    limits: SandboxLimits
    incident: str | None


class ExecResult(TypedDict, total=False):
    returncode: int | None
    stdout: str
    stderr: str
    stdout_base64: str
    stderr_base64: str
    timed_out: bool
    truncated: bool
    duration_ms: int
    error: ExecError | None
    error_message: str
    seq: int


class FileWritten(TypedDict):
    path: str
    size: int
    sha256: str
    seq: int


class TranscriptStep(TypedDict, total=False):
    seq: int
    kind: Literal["exec", "write_file", "read_file"]
    cmd: list[str]
    cwd: str
    env_names: list[str]
    user: str
    input_bytes: int
    path: str
    size: int
    returncode: int | None
    error: str | None
    timed_out: bool
    truncated: bool
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    started_at: str
    finished_at: str | None
    status: Literal["running", "done"]


class TranscriptPage(TypedDict):
    steps: list[TranscriptStep]
    next: int
    complete: bool
