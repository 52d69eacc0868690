"""``crucible``: the command-line client. Works against any Crucible URL with a personal API token.

    export CRUCIBLE_URL=http://127.0.0.1:8000 CRUCIBLE_TOKEN=cru_…
    crucible submit prog.py --timeout 30 --follow     # stream the output, exit with its exit code
    crucible logs ID --follow
    crucible status ID | crucible cancel ID | crucible stop ID | crucible list --status running

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

    def request(self, method: str, path: str, *, expect=(200,), **kwargs):
        import requests

        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code not in expect:
            raise CliError(http_error_message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {path}: the server sent something that is not JSON (HTTP {response.status_code})")

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


def http_error_message(response) -> str:
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
    hint = {401: " (check CRUCIBLE_TOKEN / --token)", 404: " (no such evaluation, or not yours)"}.get(code, "")
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
    return parser


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
