"""The session host (``manage.py crucible_sessions``): the process that owns sessions' sandboxes.

It starts a session's sandbox (``Sandbox.create`` with the session profile, then its agent,
``AgentLink``), serves every exec and file request of the sessions it holds (``operations``), and
ends them: on request, at their idle timeout or lifetime, when their container stops, or when it
itself stops. Requests come straight from the API over Redis (``rpc``); no RQ job is involved.

Threads: ``serve`` blocks on this host's request list (and on the shared start list while it has
room) and hands each request to a pool; ``watch`` writes the heartbeat and ends what is due. Database
calls go through a small pool of their own, so hundreds of execs waiting on their sandboxes hold
no database connection.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections

from apps.monitoring import incidents
from apps.sandboxing import evidence, selfcheck
from apps.sandboxing.agent_link import AgentLink, AgentLost
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError
from apps.sessions import operations, publisher, rpc
from apps.sessions.limits import session_profile
from apps.sessions.models import EndReason, Session, Status
from apps.sessions.safety import SessionSafety
from apps.sessions.services import WORKSPACE
from crucible.logcontext import bound

log = logging.getLogger(__name__)

REQUEST_THREADS = 256
DB_THREADS = 4
RECEIVE_WAIT_S = 1.0
SLOW_CHECK_EVERY_S = 3.0
SAMPLE_EVERY_S = 1.0
AGENT_START_TIMEOUT_S = 30.0


@dataclass
class Live:
    """A session this host holds: its sandbox and agent, and when it was last used."""

    session: Session
    sandbox: Sandbox
    link: AgentLink
    last_activity: float = field(default_factory=time.monotonic)
    active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    safety: SessionSafety | None = None
    ending: bool = False  # an end is on its way (``SessionHost.end_soon``)
    evidence_started: bool = False  # a stop's evidence is being kept (``SessionHost.keep_evidence``)
    evidence_done: threading.Event = field(default_factory=threading.Event)

    def busy(self) -> None:
        with self.lock:
            self.active += 1
            self.last_activity = time.monotonic()

    def idle(self) -> None:
        with self.lock:
            self.active -= 1
            self.last_activity = time.monotonic()


class SessionHost:
    def __init__(self, name: str) -> None:
        self.name = name
        self.live: dict[str, Live] = {}
        self.starting = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests = ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="session-request")
        self.database = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="session-db")
        self.threads: list[threading.Thread] = []
        self.policy_refresher = selfcheck.Refresher(name=f"sandbox-selfcheck-{name}")

    # --- life of the host ------------------------------------------------------------------
    def start(self) -> SessionHost:
        rpc.beat(self.name)
        self.policy_refresher.start()  # a session's start then finds the canary's verdict cached
        for target in (self.serve, self.watch, self.beat):
            thread = threading.Thread(target=target, name=f"session-host-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("session host %s: serving", self.name)
        return self

    def stop(self) -> None:
        """End every session it holds (their agents go with this process) and leave."""
        self.stopping.set()
        self.policy_refresher.stop()
        for thread in self.threads:
            thread.join(timeout=5)
        for live in list(self.live.values()):
            self.end(live, EndReason.WORKER_LOST, "the session host serving it stopped")
        rpc.forget_host(self.name)
        self.requests.shutdown(wait=False, cancel_futures=True)
        self.database.shutdown(wait=True)
        log.info("session host %s: stopped", self.name)

    def db(self, function, *args, **kwargs):
        """Run ``function`` on one of the few threads that hold a database connection (kept open from
        call to call, whatever ``CONN_MAX_AGE`` says: a reconnect costs more than most requests)."""

        def call():
            try:
                return function(*args, **kwargs)
            except (OperationalError, InterfaceError):
                # A restarted PostgreSQL: drop the dead connection and try once more on a new one.
                connection.close()
                return function(*args, **kwargs)

        return self.database.submit(call).result()

    # --- requests --------------------------------------------------------------------------
    def has_room(self) -> bool:
        with self.lock:
            return len(self.live) + self.starting < settings.SESSION_HOST_CAPACITY

    def serve(self) -> None:
        own = rpc.requests_key(self.name)
        while not self.stopping.is_set():
            queues = [own, rpc.STARTS] if self.has_room() else [own]
            try:
                received = rpc.receive(queues, RECEIVE_WAIT_S)
            except Exception:
                log.warning("session host %s: Redis unreachable", self.name, exc_info=True)
                self.stopping.wait(1.0)
                continue
            if received is None:
                continue
            message, payload = received
            if message.get("op") == "start":
                with self.lock:
                    self.starting += 1
            self.requests.submit(self.handle, message, payload)

    def handle(self, message: dict, payload: bytes | None) -> None:
        with bound(session_id=message.get("session", "")):
            self._handle(message, payload)

    def _handle(self, message: dict, payload: bytes | None) -> None:
        op = message.get("op")
        try:
            if op == "start":
                try:
                    answer, out = self.start_session(message["session"]), None
                finally:
                    with self.lock:
                        self.starting -= 1
            else:
                answer, out = self.operate(op, message, payload)
        except Exception as exc:
            log.exception("session host %s: %s failed", self.name, op)
            answer, out = {"status": 500, "detail": f"the session host failed: {type(exc).__name__}"}, None
        if not message.get("noreply"):
            rpc.reply(message["rid"], answer, out)

    def operate(self, op: str, message: dict, payload: bytes | None) -> tuple[dict, bytes | None]:
        live = self.live.get(message.get("session", ""))
        if op == "end":
            if live is not None:
                self.end_elsewhere(live, message.get("reason") or "")
            return {"status": 202}, None
        if live is None:
            return {"status": 409, "detail": "this session is not being served (it has ended)"}, None
        live.busy()
        try:
            return operations.perform(self, live, op, message, payload)
        finally:
            live.idle()

    # --- starting and ending -----------------------------------------------------------------
    def start_session(self, session_id: str) -> dict:
        session = self.db(Session.objects.filter(pk=session_id).first)
        if session is None or not self.db(session.claim, self.name):
            return {"status": 409, "detail": "taken by another host or ended"}
        try:
            problems = selfcheck.self_check()
        except Exception as exc:
            problems = [f"the sandbox self-check could not run: {exc}"]
        if problems:
            return self._fail(session, "the sandbox policy is not enforced here: " + "; ".join(problems))
        try:
            sandbox = Sandbox.create(
                session_profile(session), run_id=f"session-{session.pk}", name=f"crucible-session-{session.pk}"
            )
        except (SandboxSetupError, ValueError) as exc:
            return self._fail(session, str(exc))
        link = AgentLink(sandbox)
        try:
            link.request({"op": "ping"}, [], timeout_s=AGENT_START_TIMEOUT_S, blob_limit=0)
        except AgentLost as exc:
            sandbox.remove()
            return self._fail(session, f"the session's agent did not start: {exc}")
        live = Live(session=session, sandbox=sandbox, link=link)
        live.safety = self.db(SessionSafety.start, session, sandbox.profile)
        with self.lock:
            self.live[str(session.pk)] = live
        ready = self.db(
            session.mark_ready,
            container_id=sandbox.container_id,
            sandbox_runtime=sandbox.profile.engine_runtime,
            image_digest=sandbox.image_id,
        )
        if not ready:  # ended (deleted, kill switch …) while it started
            self.teardown(live)
            return {"status": 200}
        publisher.publish_status(session)
        log.info("session %s ready on %s (%s)", session.pk, self.name, sandbox.profile.engine_runtime)
        return {"status": 200}

    def _fail(self, session: Session, error: str) -> dict:
        if self.db(session.end, EndReason.ERROR, error):
            publisher.publish_end(session)
        log.warning("session %s could not start: %s", session.pk, error)
        return {"status": 200}

    def end(self, live: Live, reason: EndReason, error: str = "") -> None:
        """End a session this host holds (once: the first reason wins) and take its sandbox away, even
        when its row cannot be written (the sandbox goes regardless; the reconciler fixes the row)."""
        session = live.session
        try:
            if self.db(session.end, reason, error):
                publisher.publish_end(session)
                log.info("session %s ended: %s", session.pk, reason)
        except Exception:
            log.warning("session %s: its end (%s) could not be recorded", session.pk, reason, exc_info=True)
        if reason in EVIDENCE_REASONS:
            self.keep_evidence(live, reason)
        self.teardown(live)

    def end_elsewhere(self, live: Live, reason: str) -> None:
        """A session whose row was ended by someone else (a stop, a delete, the kill switch): a stop's
        evidence is kept (once, whichever path comes first), then its sandbox goes."""
        if reason in EVIDENCE_REASONS:
            self.keep_evidence(live, EndReason(reason))
        self.teardown(live)

    def keep_evidence(self, live: Live, reason: EndReason) -> None:
        """A safety or emergency stop: freeze the sandbox, collect its /output (the collector, its caps),
        kill it (``sandboxing.evidence``); the account, the files' hashes and the samples up to the
        stop go to the session's incident. Never raises: the teardown must follow."""
        session = live.session
        with live.lock:
            first = not live.evidence_started
            live.evidence_started = True
        if not first:
            # Another path (the end message, the watch) keeps it: wait for it before the teardown.
            live.evidence_done.wait(settings.SANDBOX_EVIDENCE_DEADLINE_S + EVIDENCE_RECORD_SLACK_S)
            return
        try:
            kept, artifacts, _truncated, _skipped = evidence.preserve(live.sandbox, collect=True, directory=WORKSPACE)
            samples = list(live.safety.monitor.recent) if live.safety is not None else []
            self.db(
                session_evidence,
                session,
                reason,
                kept.as_dict(),
                artifacts,
                samples,
            )
        except Exception:
            log.warning("session %s: its evidence could not be kept", session.pk, exc_info=True)
        finally:
            live.evidence_done.set()

    def teardown(self, live: Live) -> None:
        with self.lock:
            if self.live.pop(str(live.session.pk), None) is None:
                return
        try:
            live.link.close()
            live.sandbox.kill()
        except Exception:
            log.warning("session %s: its sandbox could not be killed", live.session.pk, exc_info=True)
        live.sandbox.remove()  # tries a few times; what is left is the reconciler's

    # --- safety rules --------------------------------------------------------------------------
    def check_output(self, live: Live, stdout: bytes, stderr: bytes) -> None:
        """Scan an exec's output with the rules; a stop rule ends the session once the exec is answered."""
        if live.safety is None:
            return
        self.db(live.safety.output, stdout, stderr)
        if live.safety.stop_requested:
            self.end_soon(live, EndReason.SAFETY_STOPPED, live.safety.why())

    def sample_all(self) -> None:
        for live in list(self.live.values()):
            if live.safety is None:
                continue
            try:
                self.db(live.safety.sample, live.sandbox)
            except Exception:
                log.warning("session %s: sample failed", live.session.pk, exc_info=True)
                continue
            if live.safety.stop_requested:
                self.end_soon(live, EndReason.SAFETY_STOPPED, live.safety.why())

    # --- the watch: heartbeat, idle and lifetime, containers that stopped ---------------------------
    def beat(self) -> None:
        """The heartbeat, on a thread of its own: nothing the watch waits for (a sandbox the engine is
        slow to remove, a busy database) may make the host look gone while it is not."""
        while not self.stopping.wait(settings.SESSION_HOST_HEARTBEAT_S):
            try:
                rpc.beat(self.name)
            except Exception:
                log.warning("session host %s: heartbeat not written", self.name, exc_info=True)

    def end_soon(self, live: Live, reason: EndReason, error: str = "") -> None:
        """``end`` on the request pool, once per session: the watch goes on at once (removing a sandbox
        can take the engine many seconds, a wedged one longer)."""
        with self.lock:
            if live.ending:
                return
            live.ending = True
        self.requests.submit(self.end, live, reason, error)

    def watch(self) -> None:
        """Idle and lifetime ends, samples for the safety rules, containers that stopped. A step that
        fails (the engine or the database away) is logged and tried again: this thread never dies."""
        last_slow = last_sample = 0.0
        while not self.stopping.wait(settings.SESSION_HOST_HEARTBEAT_S):
            steps = [self.end_due]
            if time.monotonic() - last_sample >= SAMPLE_EVERY_S:
                last_sample = time.monotonic()
                steps.append(self.sample_all)
            if time.monotonic() - last_slow >= SLOW_CHECK_EVERY_S:
                last_slow = time.monotonic()
                steps.append(self.end_stopped)
            for step in steps:
                try:
                    step()
                except Exception:
                    log.warning("session host %s: %s failed", self.name, step.__name__, exc_info=True)

    def end_due(self) -> None:
        now, wall = time.monotonic(), time.time()
        for live in list(self.live.values()):
            session = live.session
            if wall >= session.expires_at.timestamp():
                self.end_soon(live, EndReason.MAX_LIFETIME, f"reached its lifetime of {session.max_lifetime_s} s")
            elif live.active == 0 and now - live.last_activity >= session.idle_timeout_s:
                self.end_soon(live, EndReason.IDLE_TIMEOUT, f"idle for {session.idle_timeout_s} s")

    def end_stopped(self) -> None:
        """Sessions ended elsewhere (their end message lost), and sandboxes whose container stopped."""
        ids = list(self.live)
        if not ids:
            return
        ended = dict(
            self.db(
                lambda: [
                    (str(pk), reason)
                    for pk, reason in Session.objects.filter(pk__in=ids, status=Status.ENDED).values_list(
                        "pk", "end_reason"
                    )
                ]
            )
        )
        for session_id in ids:
            live = self.live.get(session_id)
            if live is None:
                continue
            if session_id in ended:
                # Ended elsewhere (its end message not here yet, or lost): a stop keeps its evidence first.
                self.requests.submit(self.end_elsewhere, live, ended[session_id])
                continue
            state = live.sandbox.container_state()
            if state and not state.get("Running"):
                if state.get("OOMKilled"):
                    why = "out of memory"
                elif live.sandbox.killed_by_the_host_kernel(state):
                    why = "killed by the host's kernel at its limits (out of memory, or out of gVisor's host tasks)"
                else:
                    why = f"its main process exited ({state.get('ExitCode')})"
                self.end_soon(live, EndReason.SANDBOX_EXITED, f"the sandbox's container stopped: {why}")


EVIDENCE_REASONS = (EndReason.STOPPED, EndReason.SAFETY_STOPPED, EndReason.KILL_SWITCH)
EVIDENCE_RECORD_SLACK_S = 10.0  # beyond the evidence step's own bound: recording it in the database


def session_evidence(session: Session, reason: EndReason, kept: dict, files: list, samples: list) -> None:
    """Record a stopped session's evidence on its incident (opened here if the stop's own is not yet):
    the account, the files of its workspace (kept on the incident, hashes on the timeline), the samples."""
    incident = incidents.open_or_update(
        session_id=session.pk,
        owner_id=session.owner_id,
        severity="critical",
        actor="session host",
        kind="stop_requested",
        detail=f"session ended: {reason}",
    )
    incidents.keep_files(incident, files)
    incidents.add_samples(incident, samples)
    hashes = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files]
    incidents.record_evidence(session_id=session.pk, evidence=kept, artifacts=hashes)


def close_database() -> None:
    connections.close_all()
