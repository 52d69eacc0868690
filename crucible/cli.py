"""``crucible``: the command-line client. Works against any Crucible URL with a personal API token.

    export CRUCIBLE_URL=http://127.0.0.1:8000 CRUCIBLE_TOKEN=cru_…
    crucible submit prog.py --timeout 30 --follow     # stream the output, exit with its exit code
    crucible logs ID --follow
    crucible status ID | crucible cancel ID | crucible stop ID | crucible list --status running
    crucible batch submit samples.jsonl --task humaneval/0 --completions --k 1,10 --follow
    crucible batch results ID [--jsonl] | crucible batch cancel ID
    crucible tasks list --source humaneval | crucible tasks show SLUG | crucible tasks import FILE.jsonl

It only speaks the public contract (REST under /api/v1/, the WebSocket under /ws/), so it
imports nothing from Django. ``--follow`` writes the program's stdout to stdout and its stderr
to stderr as they arrive, reconnects with ``?after=<last seq>`` when the connection drops (so no
line is lost or repeated), and exits with the program's exit code; 1 when it ended otherwise
without one (timed out, killed, cancelled …). Errors from the client itself exit 2 with a
one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse, urlunparse

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_CLIENT_ERROR = 2
EXIT_INTERRUPTED = 130
TERMINAL = {"succeeded", "failed", "timed_out", "oom_killed", "cancelled", "stopped", "safety_stopped", "error"}
LANGUAGE_BY_SUFFIX = {".py": "python", ".sh": "bash", ".bash": "bash"}
WS_CLOSE_REASONS = {
    4400: "the server refused the stream request as malformed",
    4401: "not signed in: the token is missing, wrong or revoked",
    4403: "not allowed to watch this evaluation",
    4404: "no such evaluation",
}
RECONNECT_GIVE_UP_S = 120


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


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        import requests

        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Token {token}", "Accept": "application/json", "User-Agent": "crucible-cli/1"}
        )

    def request(self, method: str, path: str, *, expect=(200,), what: str = "evaluation", **kwargs):
        """The JSON of a response with a status in ``expect``; else a CliError (``what`` names the 404)."""
        import requests

        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code not in expect:
            raise CliError(http_error_message(response, what))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {path}: the server sent something that is not JSON (HTTP {response.status_code})")

    def stream_to(self, stream, path: str, *, params=None, what: str) -> None:
        """Copy a (long) response body to ``stream`` as it arrives, e.g. a batch's JSONL export."""
        import requests

        try:
            with self.session.get(
                self.url + path, params=params, timeout=self.timeout, stream=True, headers={"Accept": "*/*"}
            ) as response:
                if response.status_code != 200:
                    raise CliError(http_error_message(response, what))
                buffer = getattr(stream, "buffer", None)
                for piece in response.iter_content(chunk_size=64 * 1024):
                    if buffer is not None:
                        buffer.write(piece)
                    else:
                        stream.write(piece.decode("utf-8", errors="replace"))
                (buffer or stream).flush()
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None

    def evaluation(self, evaluation_id: str) -> dict:
        return self.request("GET", f"/api/v1/evaluations/{quote(evaluation_id, safe='')}/")

    # --- WebSocket ------------------------------------------------------------------------

    def ws_url(self, evaluation_id: str, after: int) -> str:
        parsed = urlparse(self.url)
        scheme = "wss" if parsed.scheme == "https" else "ws"
        path = f"{parsed.path.rstrip('/')}/ws/evaluations/{quote(evaluation_id, safe='')}/"
        return urlunparse((scheme, parsed.netloc, path, "", urlencode({"after": after}), ""))

    @property
    def origin(self) -> str:
        # The server checks the Origin of WebSocket connections (browsers send one). Ours is the
        # server's own URL, which is honest: we are not a page from another site.
        parsed = urlparse(self.url)
        return f"{parsed.scheme}://{parsed.netloc}"


def http_error_message(response, what: str = "evaluation") -> str:
    """One readable line from an error response: the API's message or its field errors."""
    code = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("detail") or body.get("error")
        if not message:
            parts = []
            for name, errors in body.items():
                text = " ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
                parts.append(text if name == "non_field_errors" else f"{name}: {text}")
            message = "; ".join(parts)
    else:
        message = (response.text or response.reason or "").strip()[:300]
    if code == 429 and response.headers.get("Retry-After"):
        message = f"{message} (retry after {response.headers['Retry-After']} s)"
    hint = {401: " (check CRUCIBLE_TOKEN / --token)", 404: f" (no such {what}, or not yours)"}.get(code, "")
    return f"HTTP {code}: {message or response.reason}{hint}"


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
                client.ws_url(evaluation_id, last_seq),
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
            raise CliError(f"cannot open the live stream at {client.ws_url(evaluation_id, last_seq)}: {problem}")
        # Dropped (network, server restart): try again from the last chunk we printed.
        lost_since = lost_since or time.monotonic()
        if time.monotonic() - lost_since > RECONNECT_GIVE_UP_S:
            raise CliError(f"lost the live stream and could not reconnect for {RECONNECT_GIVE_UP_S} s ({problem})")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def finish(status: str | None, exit_code, evaluation_id: str, show_end: bool) -> int:
    if show_end and sys.stderr.isatty():
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
        ("stdin", stdin),
        ("timeout_s", args.timeout),
        ("memory_mb", args.memory),
        ("cpus", args.cpus),
        ("priority", args.priority),
    ):
        if value is not None:
            body[name] = value
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    evaluation = client.request("POST", "/api/v1/evaluations/", expect=(200, 201), json=body, headers=headers)
    if not args.follow:
        print(evaluation["id"])
        return 0
    if sys.stderr.isatty():
        note(f"submitted {evaluation['id']} ({client.url}/evaluations/{evaluation['id']}/)")
    return follow(client, evaluation["id"])


def cmd_logs(client: Client, args) -> int:
    if args.follow:
        return follow(client, args.id, args.after, show_end=False)
    after = args.after
    while True:
        page = client.request("GET", f"/api/v1/evaluations/{quote(args.id, safe='')}/logs/", params={"after": after})
        for chunk in page.get("chunks", []):
            emit(sys.stderr if chunk.get("stream") == "stderr" else sys.stdout, chunk.get("data", ""))
        if not page.get("chunks") or page.get("next", after) == after:
            return 0
        after = page["next"]


def cmd_status(client: Client, args) -> int:
    evaluation = client.evaluation(args.id)
    if args.json:
        print(json.dumps(evaluation, indent=2, sort_keys=True))
        return 0
    rows = [
        ("id", evaluation.get("id")),
        ("status", evaluation.get("status")),
        ("language", evaluation.get("language")),
        ("exit code", evaluation.get("exit_code")),
        ("created", evaluation.get("created_at")),
        ("started", evaluation.get("started_at")),
        ("finished", evaluation.get("finished_at")),
        ("duration", f"{evaluation['duration_ms']} ms" if evaluation.get("duration_ms") is not None else None),
        ("limits", _limits(evaluation.get("limits") or {})),
        ("peak memory", _bytes(evaluation.get("peak_memory_bytes"))),
        ("cpu time", f"{evaluation['cpu_time_ms']} ms" if evaluation.get("cpu_time_ms") is not None else None),
        ("output truncated", "yes" if evaluation.get("output_truncated") else None),
        ("error", evaluation.get("error") or None),
    ]
    for label, value in rows:
        if value is not None:
            print(f"{label + ':':<18}{value}")
    return 0


def _limits(limits: dict) -> str:
    parts = []
    if limits.get("timeout_s") is not None:
        parts.append(f"{limits['timeout_s']:g} s")
    if limits.get("memory_mb") is not None:
        parts.append(f"{limits['memory_mb']} MB")
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
    evaluation = client.request("DELETE", f"/api/v1/evaluations/{quote(args.id, safe='')}/", expect=(202,))
    print(f"{evaluation['id']}: {_after_request(evaluation, 'cancel')}")
    return 0


def cmd_stop(client: Client, args) -> int:
    evaluation = client.request("POST", f"/api/v1/evaluations/{quote(args.id, safe='')}/stop/", expect=(202,))
    print(f"{evaluation['id']}: {_after_request(evaluation, 'emergency stop')}")
    return 0


def _after_request(evaluation: dict, action: str) -> str:
    status = evaluation.get("status")
    if status in TERMINAL:
        return status
    return f"{status} ({action} requested)"


def cmd_list(client: Client, args) -> int:
    params = {key: value for key, value in (("status", args.status), ("q", args.q)) if value}
    page = client.request("GET", "/api/v1/evaluations/", params=params)
    results = page.get("results", page) if isinstance(page, dict) else page
    results = results[: args.limit]
    if not results:
        print("no evaluations", file=sys.stderr)
        return 0
    print(f"{'ID':<36}  {'STATUS':<14}  {'LANGUAGE':<8}  {'EXIT':>4}  CREATED")
    for item in results:
        exit_code = "" if item.get("exit_code") is None else str(item["exit_code"])
        print(
            f"{item['id']:<36}  {item['status']:<14}  {item.get('language', ''):<8}  {exit_code:>4}  "
            f"{item.get('created_at', '')}"
        )
    return 0


# --- tasks and batches ----------------------------------------------------------------------

FINAL_BATCH = {"completed", "cancelled"}
BATCH_POLL_S = 1.0
PROGRESS_WIDTH = 30
MAX_LINE_ERRORS = 20
SAMPLE_KEYS = {"code", "task", "metadata"}


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


def batch_path(batch_id: str, rest: str = "") -> str:
    return f"/api/v1/batches/{quote(batch_id, safe='')}/{rest}"


def cmd_batch_submit(client: Client, args) -> int:
    samples = parse_samples(read_lines(args.file), default_task=args.task)
    body: dict = {"samples": samples, "samples_are": "completions" if args.completions else "programs"}
    for name, value in (("task", args.task), ("k", args.k), ("priority", args.priority)):
        if value is not None:
            body[name] = value
    batch = client.request("POST", "/api/v1/batches/", expect=(201,), json=body, what="task")
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
        batch = client.request("GET", batch_path(batch_id), what="batch")
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
    batch = client.request("GET", batch_path(args.id), what="batch")
    if args.json:
        print(json.dumps(batch, indent=2, sort_keys=True))
    else:
        print_batch_summary(batch)
    return 0


def cmd_batch_results(client: Client, args) -> int:
    if args.jsonl:
        client.stream_to(sys.stdout, batch_path(args.id, "results/"), params={"format": "jsonl"}, what="batch")
        return 0
    print_batch_summary(client.request("GET", batch_path(args.id), what="batch"))
    print()
    print(f"{'SAMPLE':>6}  {'EVALUATION':<36}  {'TASK':<24}  {'STATUS':<14}  {'PASSED':<6}  FAILED TESTS")
    for sample in paged(client, batch_path(args.id, "results/"), what="batch"):
        passed = {True: "yes", False: "no"}.get(sample.get("passed"), "-")
        failed = ", ".join(f"{t['name']} ({t['status']})" for t in sample.get("tests", []) if not t.get("passed"))
        index = "" if sample.get("sample") is None else str(sample["sample"])
        print(
            f"{index:>6}  {sample['evaluation']:<36}  {sample.get('task', ''):<24}  {sample.get('status', ''):<14}  "
            f"{passed:<6}  {failed}"
        )
    return 0


def paged(client: Client, path: str, *, params=None, what: str, limit: int | None = None):
    """Every item of a paginated list (``?page=N``), up to ``limit``."""
    page, seen = 1, 0
    while True:
        data = client.request("GET", path, params={**(params or {}), "page": page}, what=what)
        items = data.get("results", []) if isinstance(data, dict) else data
        for item in items:
            if limit is not None and seen >= limit:
                return
            seen += 1
            yield item
        if not isinstance(data, dict) or not data.get("next") or not items:
            return
        page += 1


def cmd_batch_cancel(client: Client, args) -> int:
    batch = client.request("DELETE", batch_path(args.id), expect=(202,), what="batch")
    print(f"{batch['id']}: {batch.get('status')} ({batch.get('ended')}/{batch.get('total')} samples ended)")
    return 0


def task_path(slug: str) -> str:
    return f"/api/v1/tasks/{quote(slug, safe='/')}/"


def cmd_tasks_list(client: Client, args) -> int:
    params = {key: value for key, value in (("source", args.source), ("q", args.q)) if value}
    tasks = list(paged(client, "/api/v1/tasks/", params=params, what="task", limit=args.limit))
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
    params = {"version": args.version} if args.version else None
    task = client.request("GET", task_path(args.slug), params=params, what="task")
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
            task = client.request("POST", "/api/v1/tasks/", expect=(201,), json=body, what="task")
        except CliError as exc:
            if str(exc).startswith("cannot reach"):
                raise
            note(f"line {number}: {exc}")
            failed += 1
            continue
        created += 1
        print(f"{task['slug']} v{task.get('version')}")
    note(f"imported {created} task{'s' if created != 1 else ''}, {failed} failed")
    return 0 if not failed else 1


# --- argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crucible",
        description="Run code in Crucible's sandboxes and watch it live.",
        epilog="Exit status: the program's exit code with --follow (1 when it ended without one); "
        "2 for errors of the client (bad arguments, HTTP errors, unreachable server).",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CRUCIBLE_URL", DEFAULT_URL),
        help=f"Crucible base URL (env CRUCIBLE_URL; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=os.environ.get("CRUCIBLE_TOKEN"), help="personal API token (env CRUCIBLE_TOKEN)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", help="submit a program (FILE, or - for standard input)")
    submit.add_argument("file", metavar="FILE")
    submit.add_argument("--language", help="python or bash (default: from the file name, else python)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock limit")
    submit.add_argument("--memory", type=int, metavar="MB", help="memory limit")
    submit.add_argument("--cpus", type=float, help="CPU limit")
    submit.add_argument("--stdin", metavar="FILE", help="file given to the program as standard input")
    submit.add_argument("--priority", choices=["low", "normal", "high"])
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same evaluation")
    submit.add_argument("--follow", "-f", action="store_true", help="stream the output and exit with its exit code")
    submit.set_defaults(handler=cmd_submit)

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
    listing.add_argument("--q", help="search id, language, code and metadata")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(handler=cmd_list)

    add_batch_commands(commands)
    add_tasks_commands(commands)
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
    submit.set_defaults(handler=cmd_batch_submit)

    status = sub.add_parser("status", help="a batch's progress, counts and pass@k")
    status.add_argument("id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(handler=cmd_batch_status)

    results = sub.add_parser("results", help="per-sample, per-test verdicts")
    results.add_argument("id", metavar="ID")
    results.add_argument("--jsonl", action="store_true", help="the whole batch as JSON lines, as the API exports it")
    results.set_defaults(handler=cmd_batch_results)

    cancel = sub.add_parser("cancel", help="cancel every sample that has not ended")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(handler=cmd_batch_cancel)


def add_tasks_commands(commands) -> None:
    tasks = commands.add_parser("tasks", help="list, show and import tasks")
    sub = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="the tasks you may use")
    listing.add_argument("--source", help="only tasks from this source, e.g. humaneval")
    listing.add_argument("-q", "--q", dest="q", help="search slug, title and prompt")
    listing.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    listing.set_defaults(handler=cmd_tasks_list)

    show = sub.add_parser("show", help="a task: prompt, limits and tests (names only unless it is yours)")
    show.add_argument("slug", metavar="SLUG")
    show.add_argument("--version", type=int, help="an earlier version")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    show.set_defaults(handler=cmd_tasks_show)

    imports = sub.add_parser("import", help="create one task per line of FILE.jsonl (the API's task body)")
    imports.add_argument("file", metavar="FILE")
    imports.set_defaults(handler=cmd_tasks_import)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not args.token:
            raise CliError(
                f"no API token: set CRUCIBLE_TOKEN or pass --token (create one at {args.url}/account/tokens/)"
            )
        if urlparse(args.url).scheme not in ("http", "https") or not urlparse(args.url).netloc:
            raise CliError(f"--url must look like http://host:port, not {args.url!r}")
        return args.handler(Client(args.url, args.token), args)
    except CliError as exc:
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
