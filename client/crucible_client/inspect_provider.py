"""Inspect AI sandbox provider ``crucible``: every Inspect sample runs in its own Crucible session.

    from inspect_ai import Task
    from inspect_ai.util import SandboxEnvironmentSpec
    from crucible_client.inspect_provider import CrucibleSandboxConfig

    Task(..., sandbox="crucible")  # CRUCIBLE_URL / CRUCIBLE_TOKEN, the server's default limits
    Task(..., sandbox=SandboxEnvironmentSpec("crucible", CrucibleSandboxConfig(language="python", memory_mb=512)))

Inspect finds this module through the ``inspect_ai`` entry point of the ``crucible-client``
package (see its pyproject.toml); importing it registers the type. The config may also be a path
to a JSON or YAML file with the same fields. The token is never written to Inspect's logs: it is
excluded from the config's serialisation (prefer ``CRUCIBLE_TOKEN`` anyway).

How Inspect's contract maps onto the sessions API:

* ``task_init`` checks once that Crucible answers and accepts the token (a clear error, not one
  per sample); ``sample_init`` starts one session (``POST /api/v1/sandboxes/``, waiting until it is ready) and
  ``sample_cleanup`` deletes it, also when the sample was interrupted; ``task_cleanup`` deletes any
  session a cancelled ``sample_init`` left behind.
* ``exec`` is ``POST /{id}/exec/``: ``timed_out`` raises ``TimeoutError`` (the server has killed
  every process of the command), ``truncated`` raises ``OutputLimitExceededError``, the ``error``
  field ``permission_denied`` raises ``PermissionError``, ``user_unsupported`` raises
  ``SandboxUserUnsupportedError`` (the sandbox has no root and cannot switch users), and
  ``not_found`` is an ordinary failed result (exit 127), as Inspect asks.
* ``read_file``/``write_file`` are ``GET``/``PUT /{id}/files/``; the file errors' ``code`` becomes
  ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``;
  ``read_file`` sends Inspect's current read limit as ``max_bytes`` and a 413 becomes
  ``OutputLimitExceededError``.
* A session that has ended (409), a server that cannot be reached or has no session host (503)
  raise ``SandboxUnavailableError``.

The SDK is synchronous; every call runs in a worker thread (``anyio.to_thread.run_sync``).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, overload

import anyio
from inspect_ai.util import (
    ExecResult,
    OutputLimitExceededError,
    SandboxConnection,
    SandboxEnvironment,
    SandboxEnvironmentConfigType,
    SandboxEnvironmentLimits,
    SandboxUnavailableError,
    SandboxUserUnsupportedError,
    sandboxenv,
)
from pydantic import BaseModel, ConfigDict, Field

from crucible_client.errors import (
    ApiError,
    BadRequest,
    ConnectionFailed,
    CrucibleError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    SessionEnded,
    Unauthorized,
    Unavailable,
)
from crucible_client.sdk import Client
from crucible_client.types import ExecResult as ApiExecResult
from crucible_client.types import Sandbox

log = logging.getLogger(__name__)
T = TypeVar("T")

SANDBOX_TYPE = "crucible"
# The server's default number of active sessions per user (SESSION_MAX_ACTIVE_PER_USER): Inspect
# runs at most this many samples' sandboxes at once unless told otherwise (--max-sandboxes).
DEFAULT_MAX_SANDBOXES = 8
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class CrucibleSandboxConfig(BaseModel):
    """Where and how to start each sample's session (every field optional; None: the server's default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    """Crucible's base URL (default ``CRUCIBLE_URL``, else http://127.0.0.1:8000)."""
    token: str | None = Field(default=None, exclude=True, repr=False)
    """A personal API token (default ``CRUCIBLE_TOKEN``). Never serialised into logs."""
    language: Literal["python", "bash"] | None = None
    image: str | None = None
    """An image the operator allows, instead of ``language``."""
    memory_mb: int | None = None
    cpus: float | None = None
    idle_timeout_s: int | None = None
    max_lifetime_s: int | None = None
    ready_timeout_s: float = 120.0
    """How long ``sample_init`` waits for a session still starting."""


def load_config(config: SandboxEnvironmentConfigType | None) -> CrucibleSandboxConfig:
    """The config Inspect hands us: None, our model, or a path to a JSON/YAML file of its fields."""
    if config is None:
        return CrucibleSandboxConfig()
    if isinstance(config, CrucibleSandboxConfig):
        return config
    if isinstance(config, BaseModel):
        return CrucibleSandboxConfig(**config.model_dump())
    if isinstance(config, str):
        path = Path(config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"the crucible sandbox config {config!r} is not a readable file: {exc}") from None
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # Inspect depends on PyYAML

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"the crucible sandbox config {config!r} must hold a mapping of fields")
        return CrucibleSandboxConfig(**values)
    raise TypeError(f"unsupported crucible sandbox config: {type(config).__name__}")


def human_size(size: int) -> str:
    """Bytes as Inspect words its limits ("100 MiB"), so the messages read alike."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def unavailable(sandbox_id: str, exc: CrucibleError) -> SandboxUnavailableError:
    if isinstance(exc, SessionEnded):
        reason = exc.end_reason or "ended"
        return SandboxUnavailableError(f"the Crucible session {sandbox_id} has ended ({reason})")
    return SandboxUnavailableError(f"the Crucible session {sandbox_id} cannot be reached: {exc}")


def session_is_gone(exc: CrucibleError) -> bool:
    """The error says nothing about the request, only that the session cannot serve it."""
    if isinstance(exc, SessionEnded | ConnectionFailed | Unavailable):
        return True
    # A 404 without a file ``code`` is the session itself (deleted, or never ours).
    return isinstance(exc, NotFound) and exc.code is None


def file_error(exc: ApiError, file: str) -> Exception:
    """The OSError Inspect expects for a file route's error (the message names the file)."""
    code = exc.code
    if code == "not_found":
        return FileNotFoundError(errno.ENOENT, "No such file or directory", file)
    if code == "is_a_directory":
        return IsADirectoryError(errno.EISDIR, "Is a directory", file)
    if code == "not_a_directory":
        return NotADirectoryError(errno.ENOTDIR, "Not a directory", file)
    if code in ("permission_denied", "bad_path") or isinstance(exc, Forbidden):
        return PermissionError(errno.EACCES, exc.message or "Permission denied", file)
    if isinstance(exc, BadRequest):
        return ValueError(f"{file}: {exc.message}")
    return RuntimeError(f"{file}: {exc}")


@sandboxenv(name=SANDBOX_TYPE)
class CrucibleSandboxEnvironment(SandboxEnvironment):
    """One Crucible session (``/api/v1/sandboxes/{id}``) as an Inspect sandbox environment."""

    # Sessions started by sample_init and not yet deleted, per task: what task_cleanup deletes.
    _live: dict[str, dict[str, CrucibleSandboxEnvironment]] = {}

    def __init__(self, client: Client, sandbox: Sandbox, task_name: str = ""):
        super().__init__()
        self.client = client
        self.sandbox = sandbox
        self.sandbox_id: str = sandbox["id"]
        self.task_name = task_name
        limits = sandbox.get("limits") or {}
        self.exec_timeout_max: float | None = limits.get("exec_timeout_s_max")
        self.output_cap_bytes: int | None = limits.get("output_cap_bytes")
        self.file_max_bytes: int | None = limits.get("file_max_bytes")

    # --- Inspect's class-level hooks -------------------------------------------------------------
    @classmethod
    def config_files(cls) -> list[str]:
        return []

    @classmethod
    def default_concurrency(cls) -> int | None:
        return int(os.environ.get("CRUCIBLE_MAX_SANDBOXES") or DEFAULT_MAX_SANDBOXES)

    @classmethod
    def config_deserialize(cls, config: dict[str, Any]) -> BaseModel:
        return CrucibleSandboxConfig(**config)

    @classmethod
    async def task_init(cls, task_name: str, config: SandboxEnvironmentConfigType | None) -> None:
        """Fail the task at once, with one clear message, when the config is wrong or Crucible refuses us."""
        settings = load_config(config)
        client = Client(settings.url, settings.token, max_retries=1)
        try:
            await anyio.to_thread.run_sync(functools.partial(client.sandboxes.list, limit=1))
        except Unauthorized as exc:
            raise RuntimeError(
                f"Crucible at {client.url} refused the API token ({exc}): set CRUCIBLE_TOKEN or the config's token"
            ) from exc
        except CrucibleError as exc:
            raise RuntimeError(f"Crucible at {client.url} cannot start sandboxes: {exc}") from exc
        finally:
            client.close()

    @classmethod
    async def sample_init(
        cls, task_name: str, config: SandboxEnvironmentConfigType | None, metadata: dict[str, str]
    ) -> dict[str, SandboxEnvironment]:
        settings = load_config(config)
        client = Client(settings.url, settings.token)
        create = functools.partial(
            client.sandboxes.create,
            language=settings.language,
            image=settings.image,
            memory_mb=settings.memory_mb,
            cpus=settings.cpus,
            idle_timeout_s=settings.idle_timeout_s,
            max_lifetime_s=settings.max_lifetime_s,
            metadata=sample_metadata(task_name),
            wait=False,
        )
        # Not abandoned on cancellation: the POST finishes and its session is recorded (below,
        # before any other await) so that it is deleted whatever happens next.
        sandbox = await anyio.to_thread.run_sync(create)
        environment = cls(client, sandbox, task_name)
        cls._live.setdefault(task_name, {})[environment.sandbox_id] = environment
        try:
            ready = functools.partial(client.sandboxes.wait_ready, sandbox, timeout_s=settings.ready_timeout_s)
            environment.sandbox = await anyio.to_thread.run_sync(ready)
        except BaseException:
            await environment.end()
            raise
        return {"default": environment}

    @classmethod
    async def sample_cleanup(
        cls,
        task_name: str,
        config: SandboxEnvironmentConfigType | None,
        environments: dict[str, SandboxEnvironment],
        interrupted: bool,
    ) -> None:
        for environment in environments.values():
            if isinstance(environment, CrucibleSandboxEnvironment):
                await environment.end()

    @classmethod
    async def task_cleanup(cls, task_name: str, config: SandboxEnvironmentConfigType | None, cleanup: bool) -> None:
        left = list(cls._live.get(task_name, {}).values())
        if not cleanup:
            if left:
                ids = ", ".join(environment.sandbox_id for environment in left)
                log.warning("crucible: leaving sessions running (--no-sandbox-cleanup): %s", ids)
            return
        for environment in left:
            await environment.end()
        cls._live.pop(task_name, None)

    @classmethod
    async def cli_cleanup(cls, id: str | None) -> None:
        """``inspect sandbox cleanup crucible [ID]``: delete that session, or every live one Inspect started."""
        client = Client()
        if id is not None:
            await anyio.to_thread.run_sync(client.sandboxes.delete, id)
            return
        for status in ("starting", "ready"):
            sandboxes = await anyio.to_thread.run_sync(
                functools.partial(client.sandboxes.list, status=status, limit=None)
            )
            for sandbox in sandboxes:
                if (sandbox.get("metadata") or {}).get("inspect_task") is not None:
                    await anyio.to_thread.run_sync(client.sandboxes.delete, sandbox["id"])

    async def end(self) -> None:
        """Delete the session (shielded from cancellation: an interrupted sample still gives it back)."""
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self.client.sandboxes.delete, self.sandbox_id)
            except NotFound:
                pass
            except CrucibleError as exc:
                log.warning("crucible: could not delete session %s: %s", self.sandbox_id, exc)
            finally:
                self._live.get(self.task_name, {}).pop(self.sandbox_id, None)
                await anyio.to_thread.run_sync(self.client.close)

    # --- the sandbox ---------------------------------------------------------------------------
    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, self.sandbox_id, *args, **kwargs))

    async def exec(
        self,
        cmd: list[str],
        input: str | bytes | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: int | None = None,
        timeout_retry: bool = True,
        concurrency: bool = True,
    ) -> ExecResult[str]:
        try:
            result = await self._call(
                self.client.sandboxes.exec,
                list(cmd),
                input=input,
                env=env or None,
                cwd=cwd,
                timeout_s=self._timeout(timeout),
                user=user,
            )
        except CrucibleError as exc:
            if session_is_gone(exc):
                raise unavailable(self.sandbox_id, exc) from exc
            raise
        return self._exec_result(cmd, result, timeout)

    def _timeout(self, timeout: int | None) -> float | None:
        """Inspect's timeout, at most the server's maximum (the command then ends as timed out, honestly)."""
        if timeout is None or self.exec_timeout_max is None or timeout <= self.exec_timeout_max:
            return timeout
        log.warning(
            "crucible: exec timeout %s s is over the server's maximum; using %s s", timeout, self.exec_timeout_max
        )
        return self.exec_timeout_max

    def _exec_result(self, cmd: list[str], result: ApiExecResult, timeout: int | None) -> ExecResult[str]:
        stdout, stderr = result.get("stdout") or "", result.get("stderr") or ""
        if result.get("timed_out"):
            error = TimeoutError(f"Command timed out after {timeout} seconds" if timeout else "Command timed out")
            if stdout or stderr:
                error.truncated_output = stdout + stderr  # type: ignore[attr-defined]
            raise error
        problem, message = result.get("error"), result.get("error_message") or ""
        if problem == "user_unsupported":
            raise SandboxUserUnsupportedError(message or "the Crucible sandbox cannot run commands as that user")
        if problem == "permission_denied":
            raise PermissionError(errno.EACCES, message or "Permission denied", cmd[0] if cmd else "")
        if problem == "interrupted":
            raise SandboxUnavailableError(message or f"the Crucible session {self.sandbox_id} was interrupted")
        if problem:
            # Could not start (not found, a bad cwd, no processes left): a failed result, as a shell says it.
            code = EXIT_NOT_FOUND if problem == "not_found" else EXIT_CANNOT_EXECUTE
            return ExecResult(success=False, returncode=code, stdout=stdout, stderr=stderr or f"{message}\n")
        if result.get("truncated"):
            limit = self.output_cap_bytes or SandboxEnvironmentLimits.MAX_EXEC_OUTPUT_SIZE
            raise OutputLimitExceededError(limit_str=human_size(limit), truncated_output=stdout + stderr)
        returncode = result.get("returncode")
        if returncode is None:
            returncode = 1
        elif returncode < 0:  # killed by a signal: as a shell reports it
            returncode = 128 - returncode
        return ExecResult(success=returncode == 0, returncode=returncode, stdout=stdout, stderr=stderr)

    async def write_file(self, file: str, contents: str | bytes) -> None:
        try:
            await self._call(self.client.sandboxes.write_file, file, contents)
        except CrucibleError as exc:
            if session_is_gone(exc):
                raise unavailable(self.sandbox_id, exc) from exc
            if isinstance(exc, PayloadTooLarge):
                limit = f" (the sandbox's limit is {human_size(self.file_max_bytes)})" if self.file_max_bytes else ""
                raise OSError(errno.EFBIG, f"File too large{limit}", file) from exc
            if isinstance(exc, ApiError):
                raise file_error(exc, file) from exc
            raise

    @overload
    async def read_file(self, file: str, text: Literal[True] = True) -> str: ...

    @overload
    async def read_file(self, file: str, text: Literal[False]) -> bytes: ...

    async def read_file(self, file: str, text: bool = True) -> Union[str, bytes]:  # noqa: UP007 (Inspect's signature)
        # Read at call time: a context (override_max_read_file_size) may have lowered it.
        limit = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE
        limit_str = SandboxEnvironmentLimits.MAX_READ_FILE_SIZE_STR
        if self.file_max_bytes is not None and self.file_max_bytes < limit:
            limit, limit_str = self.file_max_bytes, human_size(self.file_max_bytes)
        try:
            contents = await self._call(self.client.sandboxes.read_file, file, max_bytes=limit)
        except CrucibleError as exc:
            if session_is_gone(exc):
                raise unavailable(self.sandbox_id, exc) from exc
            if isinstance(exc, PayloadTooLarge):
                raise OutputLimitExceededError(limit_str=limit_str, truncated_output=None) from exc
            if isinstance(exc, ApiError):
                raise file_error(exc, file) from exc
            raise
        return contents.decode("utf-8") if text else contents

    async def connection(self, *, user: str | None = None) -> SandboxConnection:
        """A command that runs a shell script (from its standard input) in this session."""
        if user not in (None, "sandbox", "10001"):
            raise SandboxUserUnsupportedError(f"the Crucible sandbox cannot run commands as {user!r}")
        command = ["crucible", "--url", self.client.url, "sandbox", "exec", self.sandbox_id, "--stdin", "-", "--", "sh"]
        return SandboxConnection(type=SANDBOX_TYPE, command=shlex.join(command))

    def default_polling_interval(self) -> float:
        return 0.2


def sample_metadata(task_name: str) -> dict[str, Any]:
    """What the session records about who started it (shown to operators; no secrets)."""
    metadata: dict[str, Any] = {"inspect_task": task_name}
    try:
        from inspect_ai.log._samples import sample_active

        active = sample_active()
        if active is not None:
            metadata["inspect_sample_id"] = active.sample.id
            metadata["inspect_epoch"] = active.epoch
    except Exception:  # noqa: BLE001, S110 (Inspect's internals may move; the metadata is a courtesy)
        pass
    return metadata
