"""``crucible``: the command-line client. Works against any Crucible URL with a personal API token.

    export CRUCIBLE_URL=http://127.0.0.1:8000 CRUCIBLE_TOKEN=cru_…
    crucible submit prog.py --timeout 30 --follow     # stream the output, exit with its exit code
    crucible logs ID --follow
    crucible status ID | crucible cancel ID | crucible stop ID | crucible list --status running
    crucible batch submit samples.jsonl --task humaneval/0 --completions --k 1,10 --follow
    crucible batch results ID [--jsonl] | crucible batch cancel ID
    crucible tasks list --source humaneval | crucible tasks show SLUG | crucible tasks import FILE.jsonl
    crucible sandbox create --language python     # prints the new sandbox's id
    crucible sandbox exec ID -- python3 -c 'print(1)' | crucible sandbox put ID local.py main.py
    crucible sandbox get ID main.py | crucible sandbox transcript ID | crucible sandbox delete ID

It only speaks the public contract (REST under /api/v1/ through the SDK, ``crucible_client.sdk``;
the WebSocket under /ws/), so it imports nothing from Django. ``--follow`` writes the program's
stdout to stdout and its stderr to stderr as they arrive, reconnects with ``?after=<last seq>``
when the connection drops (so no line is lost or repeated), and exits with the program's exit
code; 1 when it ended otherwise without one (timed out, killed, cancelled …). Errors from the
client itself exit 2 with a one-line message, never a traceback. The full table is EXIT_STATUS_HELP.

Ids: the full UUID or any unambiguous prefix of at least 8 characters (what the pages show).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from crucible_client import __version__
from crucible_client._transport import error_from_response
from crucible_client.errors import ApiError, CrucibleError
from crucible_client.sandboxes import output_bytes
from crucible_client.sdk import DEFAULT_URL
from crucible_client.sdk import Client as SdkClient
from crucible_client.types import TERMINAL_STATUSES

USER_AGENT = f"crucible-cli/{__version__}"
EXIT_CLIENT_ERROR = 2
EXIT_INTERRUPTED = 130
TERMINAL = TERMINAL_STATUSES
LANGUAGE_BY_SUFFIX = {
    ".py": "python",
    ".sh": "bash",
    ".bash": "bash",
    ".c": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".java": "java",
    ".js": "javascript",
    ".go": "go",
    ".rs": "rust",
}
WS_CLOSE_REASONS = {
    4400: "the server refused the stream request as malformed",
    4401: "not signed in: the token is missing, wrong or revoked",
    4403: "not allowed to watch this evaluation",
    4404: "no such evaluation",
}
RECONNECT_GIVE_UP_S = 120
SHORT_ID = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]{7,35}")
EXIT_STATUS_HELP = """exit status (usable in CI scripts):
  0        success (with --follow: the program succeeded)
  1..255   with --follow: the program's own exit code when it failed with one
  1        with --follow: it ended without an exit code (timed out, OOM killed, cancelled,
           stopped, error); batch --follow: the batch was cancelled
  2        an error of the client: bad arguments, HTTP errors (401, 404, 429 …), no server
  130      interrupted (Ctrl-C)
with --follow the id is printed (on stderr) when it starts and the final status when it ends."""


class CliError(Exception):
    """A problem to report in one line (exit 2)."""


# --- output -------------------------------------------------------------------------------


def emit(stream, text: str) -> None:
    """Write program output exactly, as UTF-8, whatever the terminal's locale."""
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        stream.flush()
        buffer.write(text.encode("utf-8", errors="replace"))
        buffer.flush()
    else:
        stream.write(text)
        stream.flush()


def note(message: str) -> None:
    """A message from the client (not the program) on stderr."""
    print(f"crucible: {message}", file=sys.stderr, flush=True)


# --- HTTP ---------------------------------------------------------------------------------


class Client(SdkClient):
    """The SDK's client as the CLI uses it: few, quick retries (a person is waiting), its own User-Agent."""

    def __init__(self, url: str, token: str, timeout: float = 30.0):
        super().__init__(
            url, token, timeout=timeout, max_retries=2, backoff_s=0.25, max_retry_wait_s=10, user_agent=USER_AGENT
        )


def http_error_message(response, what: str = "evaluation") -> str:
    """One readable line from an error response: the API's message or its field errors."""
    return api_error_message(error_from_response(response), what)


def api_error_message(error: ApiError, what: str = "evaluation") -> str:
    """``HTTP <status>: <the server's message>``, with when to retry (429) and a hint (401, 404)."""
    message = error.message
    if error.status == 429 and error.retry_after is not None:
        message = f"{message} (retry after {error.retry_after:g} s)"
    hint = {401: " (check CRUCIBLE_TOKEN / --token)", 404: f" (no such {what}, or not yours)"}.get(error.status, "")
    return f"HTTP {error.status}: {message}{hint}"


def write_bytes(stream, pieces) -> None:
    """Copy bytes (an iterable of pieces, e.g. a streamed download) to ``stream`` as they arrive."""
    buffer = getattr(stream, "buffer", None)
    for piece in pieces:
        if buffer is not None:
            buffer.write(piece)
        else:
            stream.write(piece.decode("utf-8", errors="replace"))
    (buffer or stream).flush()


# --- following a stream ---------------------------------------------------------------------


def follow(client: Client, evaluation_id: str, after: int = 0, *, show_end: bool = True) -> int:
    """Stream an evaluation's output until it ends; returns the exit status for this process."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    last_seq = after
    delay = 0.25
    lost_since = None
    connected_once = False
    while True:
        try:
            with connect(
                client.ws_url("evaluations", evaluation_id, last_seq),
                additional_headers={"Authorization": f"Token {client.token}"},
                origin=client.origin,
                open_timeout=10,
                close_timeout=2,
                max_size=None,
                user_agent_header="crucible-cli/1",
            ) as socket:
                lost_since, delay, connected_once = None, 0.25, True
                for raw in socket:
                    message = json.loads(raw)
                    kind = message.get("type")
                    if kind == "log":
                        if message["seq"] <= last_seq:
                            continue
                        emit(sys.stderr if message.get("stream") == "stderr" else sys.stdout, message.get("data", ""))
                        last_seq = message["seq"]
                    elif kind == "end":
                        return finish(message.get("status"), message.get("exit_code"), evaluation_id, show_end)
                    elif kind == "alert":
                        note(f"alert: {message.get('message') or json.dumps(message)}")
                code = socket.close_code
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500:
                raise CliError(f"the server refused the live stream (HTTP {status}); is the URL right?") from None
            code, problem = None, f"HTTP {status}"
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
            code, problem = getattr(getattr(exc, "rcvd", None), "code", None), f"{exc.__class__.__name__}: {exc}"
        else:
            problem = f"closed with code {code}"
        if code in WS_CLOSE_REASONS:
            raise CliError(WS_CLOSE_REASONS[code])
        if not connected_once:
            url = client.ws_url("evaluations", evaluation_id, last_seq)
            raise CliError(f"cannot open the live stream at {url}: {problem}")
        # Dropped (network, server restart): try again from the last chunk we printed.
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > RECONNECT_GIVE_UP_S:
            raise CliError(f"lost the live stream and could not reconnect for {RECONNECT_GIVE_UP_S} s ({problem})")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def finish(status: str | None, exit_code, evaluation_id: str, show_end: bool) -> int:
    """The exit status for this process; with ``show_end`` the final status on stderr (terminal or not:
    a CI log needs it most)."""
    if show_end:
        code = "" if exit_code is None else f", exit code {exit_code}"
        note(f"evaluation {evaluation_id} {str(status).replace('_', ' ')}{code}")
    return exit_status(status, exit_code)


def exit_status(status: str | None, exit_code) -> int:
    """The program's exit code; 1 when it did not succeed and has none (or claims 0 anyway)."""
    if status == "succeeded":
        return 0
    if isinstance(exit_code, int) and 0 < exit_code < 256:
        return exit_code
    return 1


# --- commands -------------------------------------------------------------------------------


def cmd_submit(client: Client, args) -> int:
    path = Path(args.file)
    try:
        code = sys.stdin.read() if args.file == "-" else path.read_text(encoding="utf-8")
        stdin = None
        if args.stdin:
            stdin = sys.stdin.read() if args.stdin == "-" else Path(args.stdin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {exc.filename if isinstance(exc, OSError) else args.file}: {exc}")
    body = {"code": code, "language": args.language or LANGUAGE_BY_SUFFIX.get(path.suffix.lower(), "python")}
    for name, value in (
        ("files", _extra_files(args.extra_file)),
        ("args", args.arg or None),
        ("env", parse_env(args.env)),
        ("stdin", stdin),
        ("timeout_s", args.timeout),
        ("memory_mb", args.memory),
        ("cpus", args.cpus),
        ("priority", args.priority),
        ("name", args.name),
        ("labels", args.label),
    ):
        if value is not None:
            body[name] = value
    evaluation = client.evaluations.submit(**body, idempotency_key=args.idempotency_key)
    if not args.follow:
        print(evaluation["id"])
        return 0
    note(f"submitted {evaluation['id']} ({client.url}/evaluations/{evaluation['id']}/)")
    return follow(client, evaluation["id"])


def _extra_files(paths: list[str] | None) -> dict[str, str] | None:
    """``--file PATH`` (repeatable): more files next to the entry point, each under its own base name."""
    if not paths:
        return None
    files = {}
    for name in paths:
        try:
            files[Path(name).name] = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read {name}: {exc}")
    return files


def cmd_runtimes(client: Client, args) -> int:
    """The server's runtimes: name, version, compiled or not, available now or not."""
    runtimes = client.runtimes()
    if args.json:
        print(json.dumps(runtimes, indent=2))
        return 0
    for runtime in runtimes:
        state = "available" if runtime.get("available") else "not built"
        build = runtime.get("build") or {}
        if not runtime.get("available") and build.get("status") in ("queued", "building"):
            state = f"building ({build.get('phase')}, {build.get('elapsed_s') or 0} s)"
        elif not runtime.get("available") and build.get("status") == "failed":
            state = "build failed"
        kind = "compiled" if runtime.get("compiled") else "interpreted"
        print(f"{runtime['name']:<18}  {kind:<11}  {state:<9}  {runtime.get('version') or ''}")
    return 0


def resolve_id(client: Client, text: str) -> str:
    """The full id of the evaluation ``text`` names: a UUID as it is; a shorter prefix (what the pages show)
    is looked up once, and the server answers 404 (none of yours) or 400 (ambiguous: give more)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if not SHORT_ID.fullmatch(text):
        raise CliError(f"{text!r} is not an evaluation id (a UUID, or its first 8 or more characters)")
    return client.evaluations.get(text.lower())["id"]


def cmd_logs(client: Client, args) -> int:
    args.id = resolve_id(client, args.id)
    if args.follow:
        return follow(client, args.id, args.after, show_end=False)
    for chunk in client.evaluations.iter_logs(args.id, args.after):
        emit(sys.stderr if chunk.get("stream") == "stderr" else sys.stdout, chunk.get("data", ""))
    return 0


def cmd_status(client: Client, args) -> int:
    evaluation = client.evaluations.get(resolve_id(client, args.id))
    if args.json:
        print(json.dumps(evaluation, indent=2, sort_keys=True))
        return 0
    rows = [
        ("id", evaluation.get("id")),
        ("name", evaluation.get("name") or None),
        ("labels", ", ".join(evaluation.get("labels") or []) or None),
        ("status", evaluation.get("status")),
        ("language", evaluation.get("language")),
        ("exit code", evaluation.get("exit_code")),
        ("created", when(evaluation.get("created_at"))),
        ("started", when(evaluation.get("started_at"))),
        ("finished", when(evaluation.get("finished_at"))),
        ("duration", _duration(evaluation.get("duration_ms"))),
        ("limits", _limits(evaluation.get("limits") or {})),
        ("peak memory", _bytes(evaluation.get("peak_memory_bytes"))),
        ("cpu time", _duration(evaluation.get("cpu_time_ms"))),
        ("re-run of", evaluation.get("rerun_of") or None),
        ("output truncated", "yes" if evaluation.get("output_truncated") else None),
        ("error", evaluation.get("error") or None),
    ]
    for label, value in rows:
        if value is not None:
            print(f"{label + ':':<18}{value}")
    return 0


def when(value: str | None) -> str | None:
    """An API timestamp in this machine's local time, to the second, with its zone: 2026-05-04 14:03:07 CEST."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(ms) -> str | None:
    """Milliseconds for people, exact ones kept: 1500 ms -> "1.5 s (1500 ms)"; 123000 -> "2 min 3 s (…)"."""
    if ms is None:
        return None
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s ({ms} ms)"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s"
    return f"{text} ({ms} ms)"


def _limits(limits: dict) -> str:
    parts = []
    if limits.get("timeout_s") is not None:
        parts.append(f"{limits['timeout_s']:g} s")
    if limits.get("memory_mb") is not None:
        parts.append(f"{limits['memory_mb']} MiB")
    if limits.get("cpus") is not None:
        parts.append(f"{limits['cpus']:g} CPU")
    return ", ".join(parts)


def _bytes(value) -> str | None:
    if value is None:
        return None
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return None


def cmd_cancel(client: Client, args) -> int:
    evaluation = client.evaluations.cancel(resolve_id(client, args.id))
    print(f"{evaluation['id']}: {_after_request(evaluation, 'cancel')}")
    return 0


def cmd_stop(client: Client, args) -> int:
    evaluation = client.evaluations.stop(resolve_id(client, args.id))
    print(f"{evaluation['id']}: {_after_request(evaluation, 'emergency stop')}")
    return 0


def _after_request(evaluation: dict, action: str) -> str:
    status = evaluation.get("status")
    if status in TERMINAL:
        return status
    return f"{status} ({action} requested)"


def cmd_list(client: Client, args) -> int:
    """Newest first, page after page up to ``--limit`` (0: all); says so on stderr when more were left."""
    limit = None if args.limit == 0 else args.limit
    wanted = None if limit is None else limit + 1  # one more, to know whether any were left out
    filters = {"status": args.status, "q": args.q, "language": args.language, "label": args.label, "name": args.name}
    results = client.evaluations.list(**{k: v for k, v in filters.items() if v}, limit=wanted)
    more = limit is not None and len(results) > limit
    results = results[:limit] if limit is not None else results
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    elif not results:
        print("no evaluations", file=sys.stderr)
    else:
        print(f"{'ID':<36}  {'STATUS':<14}  {'LANGUAGE':<8}  {'EXIT':>4}  {'CREATED':<23}  NAME")
        for item in results:
            exit_code = "" if item.get("exit_code") is None else str(item["exit_code"])
            name = " ".join([item.get("name") or "", *(f"[{label}]" for label in item.get("labels") or [])]).strip()
            print(
                f"{item['id']:<36}  {item['status']:<14}  {item.get('language', ''):<8}  {exit_code:>4}  "
                f"{when(item.get('created_at')) or '':<23}  {name}".rstrip()
            )
    if more:
        note(f"showing the newest {limit}; there are more (--limit N for more, --limit 0 for all)")
    return 0


# --- artifacts ------------------------------------------------------------------------------

UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._+=@,-]")


def safe_relative_path(name: str) -> Path:
    """An artifact's name as a relative path that stays inside the download folder.

    Each part keeps letters, digits and ``._+=@,-`` (anything else becomes ``_``); empty, ``.`` and
    ``..`` parts and leading slashes are dropped, so ``../../etc/passwd`` lands at ``etc/passwd``."""
    parts = []
    for part in name.replace("\\", "/").split("/"):
        part = UNSAFE_NAME_CHARACTERS.sub("_", part)[:200]
        if part.strip(".") == "":
            continue
        parts.append(part)
    return Path(*parts) if parts else Path("artifact")


def cmd_artifacts(client: Client, args) -> int:
    """List an evaluation's artifacts, or download them into ``--out`` (checking each one's SHA-256)."""
    evaluation_id = resolve_id(client, args.id)
    artifacts = client.evaluations.artifacts(evaluation_id)
    if args.json:
        print(json.dumps(artifacts, indent=2, sort_keys=True))
        return 0
    if args.out is None:
        if not artifacts:
            print("no artifacts", file=sys.stderr)
        for artifact in artifacts:
            print(f"{artifact.get('size', 0):>10}  {artifact['name']}")
        return 0
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        target = download_artifact(client, evaluation_id, artifact, root)
        print(target)
    if not artifacts:
        note(f"evaluation {evaluation_id} has no artifacts")
    return 0


def download_artifact(client: Client, evaluation_id: str, artifact: dict, root: Path) -> Path:
    """Write one artifact under ``root`` (atomically, never through a symlink out of it); returns its path."""
    target = root / safe_relative_path(artifact["name"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root) or target.is_symlink():
        raise CliError(f"refusing to write {artifact['name']!r}: it would land outside {root}")
    data = client.evaluations.artifact(evaluation_id, artifact["name"])
    expected = artifact.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise CliError(f"artifact {artifact['name']!r} arrived damaged (SHA-256 differs); nothing written for it")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".crucible-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temporary, target)
    return target


# --- tasks and batches ----------------------------------------------------------------------

FINAL_BATCH = {"completed", "cancelled"}
BATCH_POLL_S = 1.0
PROGRESS_WIDTH = 30
MAX_LINE_ERRORS = 20
SAMPLE_KEYS = {"code", "task", "metadata"}


def non_negative(text: str) -> int:
    """A whole number of at least 0 (``--limit``)."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, not {text!r}")
    return int(text)


def positive_ks(text: str) -> list[int]:
    """``--k 1,10`` as [1, 10]; each a whole number of at least 1."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k takes whole numbers separated by commas, like 1,10; not {text!r}")
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"each k must be at least 1; got {text!r}")
    return ks


def read_lines(name: str) -> list[tuple[int, str]]:
    """The non-blank lines of FILE (or - for standard input), each with its 1-based line number."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {name}: {exc}") from None
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_samples(lines: list[tuple[int, str]], *, default_task: str | None) -> list[dict]:
    """Each line a JSON object {"code", "task"?, "metadata"?} or a JSON string (the code).

    Every malformed line is reported with its number (the first MAX_LINE_ERRORS), and nothing is sent."""
    samples, problems = [], []
    for number, line in lines:
        try:
            value = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        problem = sample_problem(value, default_task)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        samples.append({"code": value} if isinstance(value, str) else value)
    if problems:
        shown = problems[:MAX_LINE_ERRORS]
        more = len(problems) - len(shown)
        raise CliError(
            "nothing was submitted; fix these lines:\n  "
            + "\n  ".join(shown)
            + (f"\n  … and {more} more" if more else "")
        )
    if not samples:
        raise CliError("nothing to submit: the file has no samples (one JSON object or string per line)")
    return samples


def sample_problem(value, default_task: str | None) -> str | None:
    """What is wrong with one parsed line, or None."""
    if isinstance(value, str):
        return None if value.strip() else "the code is empty"
    if not isinstance(value, dict):
        return 'expected {"code": …, "task"?: …, "metadata"?: …} or a JSON string of code'
    unknown = sorted(set(value) - SAMPLE_KEYS)
    if unknown:
        return f"unknown field {unknown[0]!r} (a sample has code, task and metadata)"
    if not isinstance(value.get("code"), str) or not value["code"].strip():
        return '"code" must be a non-empty string'
    if "task" in value and not isinstance(value["task"], str):
        return '"task" must be a task slug (a string)'
    if not value.get("task") and not default_task:
        return 'no task: give --task SLUG or a "task" on each line'
    if "metadata" in value and not isinstance(value["metadata"], dict):
        return '"metadata" must be a JSON object'
    return None


def cmd_batch_submit(client: Client, args) -> int:
    samples = parse_samples(read_lines(args.file), default_task=args.task)
    batch = client.batches.submit(
        samples,
        samples_are="completions" if args.completions else "programs",
        task=args.task,
        k=args.k,
        priority=args.priority,
    )
    if not args.follow:
        print(batch["id"])
        return 0
    total = batch.get("total", len(samples))
    note(f"submitted batch {batch['id']} of {total} samples ({client.url}/batches/{batch['id']}/)")
    try:
        return follow_batch(client, batch["id"])
    except KeyboardInterrupt:
        note(f"stopped following; the batch goes on (crucible batch cancel {batch['id']} cancels it)")
        raise


def follow_batch(client: Client, batch_id: str, *, interval: float = BATCH_POLL_S) -> int:
    """Poll the batch until it is final, with a one-line progress bar on stderr; then print its summary.

    Exit status: 0 when it completed, 1 when it was cancelled."""
    shown = None
    while True:
        batch = client.batches.get(batch_id)
        line = progress_line(batch)
        if sys.stderr.isatty():
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
        elif line != shown:
            print(line, file=sys.stderr, flush=True)
        shown = line
        if batch.get("status") in FINAL_BATCH:
            if sys.stderr.isatty():
                print(file=sys.stderr, flush=True)
            print_batch_summary(batch)
            return 0 if batch.get("status") == "completed" else 1
        time.sleep(interval)


def progress_line(batch: dict) -> str:
    total, ended = batch.get("total") or 0, batch.get("ended") or 0
    filled = PROGRESS_WIDTH * ended // total if total else PROGRESS_WIDTH
    bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
    return f"[{bar}] {ended}/{total} ended · {batch.get('passed', 0)} passed · {batch.get('status')}"


def print_batch_summary(batch: dict) -> None:
    print(f"{'batch:':<11}{batch.get('id')}")
    print(f"{'status:':<11}{batch.get('status')}")
    print(f"{'samples:':<11}{batch.get('total')} ({batch.get('ended')} ended, {batch.get('passed')} passed)")
    counts = {status: n for status, n in (batch.get("counts") or {}).items() if n}
    if counts:
        print(f"{'by status:':<11}" + ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    why_not = batch.get("pass_at_k_not_computable") or {}
    for k, value in (batch.get("pass_at_k") or {}).items():
        shown = (
            f"{value:.4f}" if isinstance(value, int | float) else f"not computable ({why_not.get(k, 'nothing judged')})"
        )
        print(f"{f'pass@{k}:':<11}{shown}")


def cmd_batch_status(client: Client, args) -> int:
    batch = client.batches.get(args.id)
    if args.json:
        print(json.dumps(batch, indent=2, sort_keys=True))
    else:
        print_batch_summary(batch)
    return 0


def cmd_batch_results(client: Client, args) -> int:
    if args.jsonl:
        write_bytes(sys.stdout, client.batches.results_jsonl(args.id))
        return 0
    print_batch_summary(client.batches.get(args.id))
    print()
    print(f"{'SAMPLE':>6}  {'EVALUATION':<36}  {'TASK':<24}  {'STATUS':<14}  {'PASSED':<6}  FAILED TESTS")
    for sample in client.batches.results(args.id):
        passed = {True: "yes", False: "no"}.get(sample.get("passed"), "-")
        failed = ", ".join(f"{t['name']} ({t['status']})" for t in sample.get("tests", []) if not t.get("passed"))
        index = "" if sample.get("sample") is None else str(sample["sample"])
        print(
            f"{index:>6}  {sample['evaluation']:<36}  {sample.get('task', ''):<24}  {sample.get('status', ''):<14}  "
            f"{passed:<6}  {failed}"
        )
    return 0


def cmd_batch_cancel(client: Client, args) -> int:
    batch = client.batches.cancel(args.id)
    print(f"{batch['id']}: {batch.get('status')} ({batch.get('ended')}/{batch.get('total')} samples ended)")
    return 0


def cmd_tasks_list(client: Client, args) -> int:
    tasks = client.tasks.list(source=args.source or None, q=args.q or None, limit=args.limit)
    if not tasks:
        print("no tasks", file=sys.stderr)
        return 0
    print(f"{'SLUG':<32}  {'VERSION':>7}  {'SOURCE':<12}  {'LANGUAGE':<8}  {'TESTS':>5}  TITLE")
    for task in tasks:
        print(
            f"{task['slug']:<32}  {task.get('version', ''):>7}  {task.get('source') or '-':<12}  "
            f"{task.get('language', ''):<8}  {task.get('tests_count', ''):>5}  {task.get('title', '')}"
        )
    return 0


def cmd_tasks_show(client: Client, args) -> int:
    task = client.tasks.get(args.slug, version=args.version or None)
    if args.json:
        print(json.dumps(task, indent=2, sort_keys=True))
        return 0
    for label, key in (("slug", "slug"), ("version", "version"), ("title", "title"), ("language", "language")):
        print(f"{label + ':':<14}{task.get(key)}")
    if task.get("entry_point"):
        print(f"{'entry point:':<14}{task['entry_point']}")
    print(f"{'limits:':<14}{_limits(task)}")
    print(f"{'source:':<14}{task.get('source') or '-'}")
    print(f"{'owner:':<14}{task.get('owner')}{' (public)' if task.get('public') else ''}")
    hidden = "" if task.get("tests_visible") else " (hidden: names only)"
    print(f"{'tests:':<14}{task.get('tests_count')}{hidden}")
    for test in task.get("tests", []):
        print(f"  - {test['name']} [{test.get('category', 'functional')}, {test['kind']}]")
        if task.get("tests_visible"):
            for key in ("stdin", "expected_stdout", "match", "code"):
                if test.get(key):
                    print(f"      {key}: {json.dumps(test[key])[:200]}")
    if task.get("prompt"):
        print("prompt:")
        print(task["prompt"].rstrip("\n"))
    return 0


def cmd_tasks_import(client: Client, args) -> int:
    """POST each line as a task; every failure is reported with its line number, the rest still imported."""
    created, failed = 0, 0
    for number, line in read_lines(args.file):
        try:
            body = json.loads(line)
        except ValueError as exc:
            note(f"line {number}: not JSON ({exc.msg} at column {exc.colno})")
            failed += 1
            continue
        if not isinstance(body, dict):
            note(f"line {number}: expected a JSON object (a task)")
            failed += 1
            continue
        try:
            task = client.tasks.create(body)
        except ApiError as exc:
            note(f"line {number}: {api_error_message(exc, 'task')}")
            failed += 1
            continue
        created += 1
        print(f"{task['slug']} v{task.get('version')}")
    note(f"imported {created} task{'s' if created != 1 else ''}, {failed} failed")
    return 0 if not failed else 1


# --- sandboxes (sessions) -------------------------------------------------------------------

TRANSCRIPT_POLL_S = 1.0
# Exit statuses of `crucible sandbox exec` when the command has no exit code of its own, as a
# shell would report them: 124 timed out (as timeout(1)), 126 cannot execute, 127 not found.
EXIT_TIMED_OUT = 124
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


def read_input(name: str) -> bytes:
    """The bytes of FILE, or of standard input for -."""
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None


def parse_env(pairs: list[str] | None) -> dict[str, str] | None:
    """``--env NAME=VALUE`` (repeatable) as a dict."""
    if not pairs:
        return None
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def cmd_sandbox_create(client: Client, args) -> int:
    sandbox = client.sandboxes.create(
        language=args.language,
        image=args.image,
        memory_mb=args.memory,
        cpus=args.cpus,
        idle_timeout_s=args.idle_timeout,
        max_lifetime_s=args.max_lifetime,
        wait=not args.no_wait,
    )
    if args.json:
        print(json.dumps(sandbox, indent=2, sort_keys=True))
    else:
        print(sandbox["id"])
    return 0


def cmd_sandbox_list(client: Client, args) -> int:
    sandboxes = client.sandboxes.list(status=args.status or None, limit=args.limit)
    if not sandboxes:
        print("no sandboxes", file=sys.stderr)
        return 0
    print(f"{'ID':<36}  {'STATUS':<8}  {'END REASON':<14}  {'LANGUAGE':<8}  {'STEPS':>5}  CREATED")
    for item in sandboxes:
        print(
            f"{item['id']:<36}  {item.get('status', ''):<8}  {item.get('end_reason') or '':<14}  "
            f"{item.get('language') or '':<8}  {item.get('step_count', ''):>5}  {item.get('created_at', '')}"
        )
    return 0


def cmd_sandbox_show(client: Client, args) -> int:
    sandbox = client.sandboxes.get(args.id)
    if args.json:
        print(json.dumps(sandbox, indent=2, sort_keys=True))
        return 0
    limits = sandbox.get("limits") or {}
    ended = sandbox.get("end_reason")
    rows = [
        ("id", sandbox.get("id")),
        ("status", f"{sandbox.get('status')} ({ended})" if ended else sandbox.get("status")),
        ("error", sandbox.get("error") or None),
        ("language", sandbox.get("language")),
        ("image", sandbox.get("image")),
        ("runtime", sandbox.get("sandbox_runtime")),
        ("limits", f"{sandbox.get('memory_mb')} MB, {sandbox.get('cpus', 0):g} CPU"),
        ("idle timeout", f"{sandbox.get('idle_timeout_s')} s"),
        ("max lifetime", f"{sandbox.get('max_lifetime_s')} s"),
        ("exec timeout", f"{limits['exec_timeout_s_default']:g} s (max {limits['exec_timeout_s_max']:g} s)")
        if limits
        else None,
        ("working dir", sandbox.get("cwd")),
        ("user", sandbox.get("user")),
        ("steps", sandbox.get("step_count")),
        ("created", sandbox.get("created_at")),
        ("last activity", sandbox.get("last_activity_at")),
        ("expires", sandbox.get("expires_at")),
        ("ended", sandbox.get("ended_at")),
    ]
    for row in rows:
        if row is not None and row[1] is not None:
            print(f"{row[0] + ':':<15}{row[1]}")
    return 0


def cmd_sandbox_exec(client: Client, args) -> int:
    argv = args.cmd
    if not argv:
        raise CliError("no command: crucible sandbox exec ID [options] -- COMMAND [ARGS …]")
    result = client.sandboxes.exec(
        args.id,
        argv,
        input=read_input(args.stdin) if args.stdin else None,
        env=parse_env(args.env),
        cwd=args.cwd,
        timeout_s=args.timeout,
        user=args.user,
    )
    write_bytes(sys.stdout, [output_bytes(result, "stdout")])
    write_bytes(sys.stderr, [output_bytes(result, "stderr")])
    return exec_exit_status(result)


def exec_exit_status(result: dict) -> int:
    """The command's exit code; else what a shell would say (124 timed out, 126, 127), noted on stderr."""
    if result.get("truncated"):
        note("output over the sandbox's cap was dropped")
    if result.get("timed_out"):
        note("timed out: every process of the command was killed")
        return EXIT_TIMED_OUT
    error = result.get("error")
    if error:
        note(f"{error}: {result.get('error_message') or 'the command could not start'}")
        return {"not_found": EXIT_NOT_FOUND, "permission_denied": EXIT_CANNOT_EXECUTE}.get(error, 1)
    code = result.get("returncode")
    if isinstance(code, int):
        return code if 0 <= code < 256 else 128 + abs(code) % 128
    return 1


def cmd_sandbox_put(client: Client, args) -> int:
    written = client.sandboxes.write_file(args.id, args.path, read_input(args.local))
    print(f"{written['path']} ({written['size']} bytes, sha256 {written['sha256']})")
    return 0


def cmd_sandbox_get(client: Client, args) -> int:
    data = client.sandboxes.read_file(args.id, args.path, max_bytes=args.max_bytes)
    if args.output and args.output != "-":
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise CliError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        write_bytes(sys.stdout, [data])
    return 0


def cmd_sandbox_end(client: Client, args) -> int:
    sandbox = (client.sandboxes.stop if args.emergency else client.sandboxes.delete)(args.id)
    reason = sandbox.get("end_reason")
    print(f"{sandbox['id']}: {sandbox.get('status')}{f' ({reason})' if reason else ''}")
    return 0


def cmd_sandbox_transcript(client: Client, args) -> int:
    if args.jsonl:
        write_bytes(sys.stdout, client.sandboxes.transcript_jsonl(args.id))
        return 0
    print(f"{'SEQ':>4}  {'KIND':<10}  {'STATUS':<7}  {'EXIT':>4}  {'MS':>7}  WHAT", flush=True)
    if args.follow:
        return follow_transcript(client, args.id, args.after)
    for step in client.sandboxes.iter_transcript(args.id, args.after):
        print(step_line(step))
    return 0


def follow_transcript(client: Client, sandbox_id: str, after: int = 0, *, interval: float = TRANSCRIPT_POLL_S) -> int:
    """Print each step once it is done, until the session has ended and every step is shown.

    A step still running is asked for again (``after`` stays before it), so none is lost or repeated."""
    while True:
        page = client.sandboxes.transcript(sandbox_id, after)
        steps, waiting = page.get("steps", []), False
        for step in steps:
            if step.get("status") == "running":
                waiting = True
                break
            print(step_line(step), flush=True)
            after = step["seq"]
        if not waiting and page.get("complete"):
            sandbox = client.sandboxes.get(sandbox_id)
            note(f"sandbox {sandbox_id} ended ({sandbox.get('end_reason')})")
            return 0
        if waiting or not steps:
            time.sleep(interval)


def step_line(step: dict) -> str:
    """One transcript step in one line: the command (or path) and how it ended."""
    if step.get("kind") == "exec":
        what = shlex.join(step.get("cmd") or [])
        if step.get("cwd"):
            what += f"   (in {step['cwd']})"
    else:
        what = f"{step.get('path', '')} ({step.get('size', 0)} bytes)"
    flags = [flag for flag in ("error", "timed_out", "truncated") if step.get(flag)]
    if step.get("error"):
        flags[0] = f"error {step['error']}"
    exit_code = "" if step.get("returncode") is None else str(step["returncode"])
    duration = "" if step.get("duration_ms") is None else str(step["duration_ms"])
    line = f"{step.get('seq', ''):>4}  {step.get('kind', ''):<10}  {step.get('status', ''):<7}  {exit_code:>4}  "
    return f"{line}{duration:>7}  {what}{'  [' + ', '.join(flags) + ']' if flags else ''}"


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crucible",
        description="Run code in Crucible's sandboxes and watch it live.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CRUCIBLE_URL", DEFAULT_URL),
        help=f"Crucible base URL (env CRUCIBLE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("CRUCIBLE_TOKEN"), help="personal API token (env CRUCIBLE_TOKEN)"
    )
    parser.set_defaults(what="evaluation")  # what a 404 means: "no such <what>, or not yours"
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a program (FILE, or - for standard input)")
    submit.add_argument("file", metavar="FILE")
    submit.add_argument(
        "--language", help="a runtime (see `crucible runtimes`; default: from the file name, else python)"
    )
    submit.add_argument(
        "--file", dest="extra_file", action="append", metavar="PATH", help="another file next to FILE (repeatable)"
    )
    submit.add_argument("--arg", action="append", metavar="ARG", help="an argument for the program (repeatable)")
    submit.add_argument("--env", action="append", metavar="NAME=VALUE", help="a variable for the program (repeatable)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock limit")
    submit.add_argument("--memory", type=int, metavar="MB", help="memory limit")
    submit.add_argument("--cpus", type=float, help="CPU limit")
    submit.add_argument("--stdin", metavar="FILE", help="file given to the program as standard input")
    submit.add_argument("--priority", choices=["low", "normal", "high"])
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same evaluation")
    submit.add_argument("--name", help="a name to tell this run apart (at most 100 characters)")
    submit.add_argument("--label", action="append", metavar="LABEL", help="a label, e.g. model=gpt-4 (repeatable)")
    submit.add_argument("--follow", "-f", action="store_true", help="stream the output and exit with its exit code")
    submit.set_defaults(handler=cmd_submit)

    runtimes = commands.add_parser("runtimes", help="list the server's runtimes (languages) and their versions")
    runtimes.add_argument("--json", action="store_true", help="print the API's JSON")
    runtimes.set_defaults(handler=cmd_runtimes)

    logs = commands.add_parser("logs", help="print an evaluation's output")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("--follow", "-f", action="store_true", help="keep streaming until it ends")
    logs.add_argument("--after", type=int, default=0, metavar="SEQ", help="only chunks after this sequence number")
    logs.set_defaults(handler=cmd_logs)

    status = commands.add_parser("status", help="show an evaluation's status and results")
    status.add_argument("id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(handler=cmd_status)

    for name, handler, text in (
        ("cancel", cmd_cancel, "cancel (SIGTERM, then SIGKILL after a grace)"),
        ("stop", cmd_stop, "emergency stop (SIGKILL now)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("id", metavar="ID")
        sub.set_defaults(handler=handler)

    listing = commands.add_parser("list", help="list your evaluations, newest first")
    listing.add_argument("--status", help="only this status (queued, running, succeeded, failed, …)")
    listing.add_argument("--q", help="search id, name, labels, language, code and metadata")
    listing.add_argument("--language", help="only this language")
    listing.add_argument("--label", help="only evaluations with this label")
    listing.add_argument("--name", help="only evaluations whose name contains this")
    listing.add_argument(
        "--limit", type=non_negative, default=50, help="at most this many, fetched page by page (default 50; 0: all)"
    )
    listing.add_argument("--json", action="store_true", help="print the API's JSON (a list)")
    listing.set_defaults(handler=cmd_list)

    artifacts = commands.add_parser("artifacts", help="list an evaluation's artifacts, or download them (--out DIR)")
    artifacts.add_argument("id", metavar="ID")
    artifacts.add_argument("--out", metavar="DIR", help="download every artifact into DIR (created if need be)")
    artifacts.add_argument("--json", action="store_true", help="print the API's JSON list")
    artifacts.set_defaults(handler=cmd_artifacts)

    add_batch_commands(commands)
    add_tasks_commands(commands)
    add_sandbox_commands(commands)
    return parser


def add_batch_commands(commands) -> None:
    batch = commands.add_parser("batch", help="submit and follow batches of samples scored against tasks")
    sub = batch.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")

    submit = sub.add_parser(
        "submit",
        help="submit samples.jsonl (or - for standard input)",
        description='Each line is {"code": …, "task"?: …, "metadata"?: …}, or a JSON string (the code).',
    )
    submit.add_argument("file", metavar="FILE")
    submit.add_argument("--task", metavar="SLUG", help="the task of samples that name none")
    submit.add_argument(
        "--completions", action="store_true", help="each sample completes the task's prompt (HumanEval style)"
    )
    submit.add_argument("--k", type=positive_ks, metavar="K[,K…]", help="pass@k to compute, e.g. 1,10 (default 1)")
    submit.add_argument("--priority", choices=["low", "normal", "high"])
    submit.add_argument("--follow", "-f", action="store_true", help="show progress until it ends, then the summary")
    submit.set_defaults(handler=cmd_batch_submit, what="task")

    status = sub.add_parser("status", help="a batch's progress, counts and pass@k")
    status.add_argument("id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(handler=cmd_batch_status, what="batch")

    results = sub.add_parser("results", help="per-sample, per-test verdicts")
    results.add_argument("id", metavar="ID")
    results.add_argument("--jsonl", action="store_true", help="the whole batch as JSON lines, as the API exports it")
    results.set_defaults(handler=cmd_batch_results, what="batch")

    cancel = sub.add_parser("cancel", help="cancel every sample that has not ended")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(handler=cmd_batch_cancel, what="batch")


def add_tasks_commands(commands) -> None:
    tasks = commands.add_parser("tasks", help="list, show and import tasks")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="the tasks you may use")
    listing.add_argument("--source", help="only tasks from this source, e.g. humaneval")
    listing.add_argument("-q", "--q", dest="q", help="search slug, title and prompt")
    listing.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    listing.set_defaults(handler=cmd_tasks_list, what="task")

    show = sub.add_parser("show", help="a task: prompt, limits and tests (names only unless it is yours)")
    show.add_argument("slug", metavar="SLUG")
    show.add_argument("--version", type=int, help="an earlier version")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    show.set_defaults(handler=cmd_tasks_show, what="task")

    imports = sub.add_parser("import", help="create one task per line of FILE.jsonl (the API's task body)")
    imports.add_argument("file", metavar="FILE")
    imports.set_defaults(handler=cmd_tasks_import, what="task")


def add_sandbox_commands(commands) -> None:
    sandbox = commands.add_parser("sandbox", help="long-lived sandboxes: run commands and move files step by step")
    sub = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="COMMAND")
    sandbox.set_defaults(what="sandbox")

    create = sub.add_parser("create", help="start a sandbox and print its id once it is ready")
    create.add_argument("--language", choices=["python", "bash"], help="its runtime image (default python)")
    create.add_argument("--image", help="an image the operator allows, instead of --language")
    create.add_argument("--memory", type=int, metavar="MB", help="memory limit")
    create.add_argument("--cpus", type=float, help="CPU limit")
    create.add_argument("--idle-timeout", type=int, metavar="SECONDS", help="end it after this long unused")
    create.add_argument("--max-lifetime", type=int, metavar="SECONDS", help="end it this long after it started")
    create.add_argument("--no-wait", action="store_true", help="return at once, even if it is still starting")
    create.add_argument("--json", action="store_true", help="print the API's JSON")
    create.set_defaults(handler=cmd_sandbox_create, what="sandbox")

    listing = sub.add_parser("list", help="your sandboxes, newest first")
    listing.add_argument("--status", choices=["starting", "ready", "ended"])
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=cmd_sandbox_list, what="sandbox")

    show = sub.add_parser("show", help="a sandbox's status, limits and timings")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    show.set_defaults(handler=cmd_sandbox_show, what="sandbox")

    run = sub.add_parser(
        "exec",
        help="run a command in it (no shell: -- sh -c '…' for one); exits with its exit code",
        description="Exit status: the command's; 124 when it timed out, 126 when it could not be executed, "
        "127 when it was not found; 2 for errors of the client.",
    )
    run.add_argument("id", metavar="ID")
    run.add_argument("--cwd", help="working directory (relative to /sandbox, or absolute)")
    run.add_argument("--env", action="append", metavar="NAME=VALUE", help="an environment variable (repeatable)")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="kill it (and what it started) after this")
    run.add_argument("--stdin", metavar="FILE", help="file given to the command as standard input (- for ours)")
    run.add_argument("--user", help="sandbox (the default) or 10001; the sandbox cannot switch to other users")
    run.add_argument("cmd", nargs="*", metavar="-- COMMAND [ARGS …]", help="the command, after --")
    run.set_defaults(handler=cmd_sandbox_exec, what="sandbox")

    put = sub.add_parser("put", help="copy LOCAL (- for standard input) to PATH in the sandbox")
    put.add_argument("id", metavar="ID")
    put.add_argument("local", metavar="LOCAL")
    put.add_argument("path", metavar="PATH", help="relative to /sandbox, or absolute; parents are created")
    put.set_defaults(handler=cmd_sandbox_put, what="sandbox")

    get = sub.add_parser("get", help="copy PATH from the sandbox to standard output (or -o FILE)")
    get.add_argument("id", metavar="ID")
    get.add_argument("path", metavar="PATH")
    get.add_argument("-o", "--output", metavar="FILE", help="write it here instead")
    get.add_argument("--max-bytes", type=int, metavar="N", help="refuse (HTTP 413) a file larger than this")
    get.set_defaults(handler=cmd_sandbox_get, what="sandbox")

    for name, emergency, text in (
        ("delete", False, "end it (its files are gone)"),
        ("stop", True, "emergency stop (with an alert and an audit entry)"),
    ):
        end = sub.add_parser(name, help=text)
        end.add_argument("id", metavar="ID")
        end.set_defaults(handler=cmd_sandbox_end, emergency=emergency, what="sandbox")

    transcript = sub.add_parser("transcript", help="every recorded step: commands, file writes, exits, timings")
    transcript.add_argument("id", metavar="ID")
    transcript.add_argument("--after", type=int, default=0, metavar="SEQ", help="only steps after this one")
    transcript.add_argument("--jsonl", action="store_true", help="every step as JSON lines, outputs included")
    transcript.add_argument("--follow", "-f", action="store_true", help="keep printing new steps until it ends")
    transcript.set_defaults(handler=cmd_sandbox_transcript, what="sandbox")


def split_exec_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``… sandbox exec ID [options] -- COMMAND …``: the command after ``--``, kept away from argparse
    (which cannot mix options between two positionals); None when this is not such a line."""
    if "--" not in argv:
        return argv, None
    head = argv[: argv.index("--")]
    if "sandbox" not in head or "exec" not in head[head.index("sandbox") :]:
        return argv, None
    return head, argv[len(head) + 1 :]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, command = split_exec_command(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    if command is not None:
        args.cmd = [*getattr(args, "cmd", []), *command]
    try:
        if not args.token:
            raise CliError(
                f"no API token: set CRUCIBLE_TOKEN or pass --token (create one at {args.url}/account/tokens/)"
            )
        if urlparse(args.url).scheme not in ("http", "https") or not urlparse(args.url).netloc:
            raise CliError(f"--url must look like http://host:port, not {args.url!r}")
        return args.handler(Client(args.url, args.token), args)
    except ApiError as exc:
        note(api_error_message(exc, getattr(args, "what", "evaluation")))
        return EXIT_CLIENT_ERROR
    except (CliError, CrucibleError) as exc:
        note(str(exc))
        return EXIT_CLIENT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `crucible logs ID | head`: the reader left; that is not an error.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (keep interpreter shutdown quiet)
        except OSError:
            pass
        return 0
    except Exception as exc:  # never a traceback for the user
        note(f"unexpected error: {exc.__class__.__name__}: {exc}")
        return EXIT_CLIENT_ERROR


if __name__ == "__main__":
    sys.exit(main())
