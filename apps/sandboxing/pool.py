"""Warm pools: started, idle, fully locked-down sandboxes, so a run skips the container's start.

A worker keeps ``size`` idle sandboxes per ``Profile`` (image, engine runtime, limits) it expects
runs to ask for. They are ordinary sandboxes (``Sandbox.create``, the whole policy), holding no
code: the idle main process only. Each is named ``crucible-pool-<owner>-<n>`` and labelled with its
owner (``LABEL_POOL``) and profile (``LABEL_PROFILE``).

``claim(owner, profile, run_id)`` takes one for a run by renaming it to ``crucible-<run_id>``: the
engine renames a container once, so two claimants (the worker's job and its refill or drain) never
get the same sandbox. A claimed sandbox runs exactly one program and is removed with it (the
runner's ``finally``), so isolation between runs is what a cold start gives. Its main process is
the helper's ``await`` (``Sandbox.attachable``) when ``attach_suits`` its profile: the run
sends its one program to it over attach; several programs (``runner.run_programs``) go by exec,
the main process waiting on its stdin as the idle one would. ``WarmPool`` refills
in a thread of the worker's main process, at once when a claim in that process took one of its
sandboxes and otherwise every ``CHECK_EVERY_S`` (a sandbox that died, parked ones to expire, a claim
made by a forked work horse), and ``drain`` removes what is idle; the reconciler removes
the pool containers of a worker that is gone (``remove_pools_of``), claimed or not.

A batch's sandbox reset and handed over within one worker process (``park_in_background``) is never
renamed: it is named ``crucible-kept-<owner>-<n>`` from its start (``create_reusable`` with
``kept``), or from the claim that took it warm from the pool for the batch's first sample there
(``claim_to_keep``), belongs to no run by its name, and is removed by that process (its run's end
unless it is handed over, ``expire_kept``, a drain), or by the reconciler once its worker has no live
run (``remove_pools_of``, ``remove_kept``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import docker.errors
from django.conf import settings

from apps.sandboxing import containers, engine
from apps.sandboxing.engine_runtime import RuntimeUnknown
from apps.sandboxing.policy import LABEL_INSTANCE, LABEL_POOL, LABEL_PROFILE, Profile
from apps.sandboxing.sandbox import Sandbox, SandboxSetupError, attach_suits

log = logging.getLogger(__name__)

# A pass lists the engine's pool containers: once a second, not four times (as it was). A claim in
# this process wakes the refill (``_refill_wanted``), which starts the replacement once that run is over.
CHECK_EVERY_S = 1.0
# The refill after a claim waits for the run that claimed to be over (``run_over``), at most this
# long: a sandbox starting beside a short run took CPU from its program and from the recording of
# its end (pool on, runc: POST to end +28-38 ms over the raw warm delivery against +35-59 ms, A/B);
# a longer run's refill starts meanwhile, so a dense stream of runs still finds its sandboxes warm.
REFILL_AFTER_CLAIM_MAX_S = 0.5
PARKED = "r"  # a parked sandbox's name: <idle prefix>r<unix time parked>-<hex>
KEPT_PREFIX = "crucible-kept-"  # a sandbox handed over within a process: crucible-kept-<owner>-<hex>
FAILURE_PAUSE_S = 5.0  # after the engine refused a pool sandbox: do not hammer it


def _idle_prefix(owner: str) -> str:
    return f"crucible-pool-{_safe(owner)}-"


def _kept_prefix(owner: str) -> str:
    return f"{KEPT_PREFIX}{_safe(owner)}-"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


def _pool_containers(owner: str, profile_key: str | None = None) -> list[dict]:
    labels = [f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}", f"{LABEL_POOL}={owner}"]
    if profile_key is not None:
        labels.append(f"{LABEL_PROFILE}={profile_key}")
    return engine.client().api.containers(all=True, filters={"label": labels})


def _unclaimed(owner: str, profile_key: str | None = None) -> list[dict]:
    return _named(_pool_containers(owner, profile_key), _idle_prefix(owner))


def _named(found: list[dict], prefix: str) -> list[dict]:
    """The containers of an engine listing whose name starts with ``prefix``."""
    return [c for c in found if any(name.startswith("/" + prefix) for name in c.get("Names") or [])]


def idle(owner: str, profile_key: str | None = None) -> list[str]:
    """Ids of ``owner``'s running, unclaimed pool sandboxes (of one profile, or all)."""
    return [c["Id"] for c in _unclaimed(owner, profile_key) if c.get("State") == "running"]


def remove_dead(owner: str, unclaimed: list[dict] | None = None) -> list[str]:
    """Remove ``owner``'s unclaimed pool sandboxes that are no longer running (the engine restarted
    under them, or their idle process died): they can never be claimed. ``unclaimed``: the engine's
    listing of them, if just made (``_unclaimed``)."""
    removed = []
    for found in _unclaimed(owner) if unclaimed is None else unclaimed:
        if found.get("State") != "running":
            containers.remove(found["Id"])
            removed.append(found["Id"])
    if removed:
        log.warning("warm pool of %s: removed %d sandboxes that had stopped", owner, len(removed))
    return removed


def claim(owner: str, profile: Profile, run_id: str, key: str | None = None, *, name: str = "") -> Sandbox | None:
    """One of ``owner``'s idle sandboxes of ``profile`` (labelled ``key``, by default the profile's),
    now named for ``run_id`` (or ``name``); None when none is idle (or the engine cannot list them:
    the run then starts cold, and fails there if the engine is away).

    A sandbox this process is resetting for ``key`` (``park_in_background``) is waited for and taken
    first, without asking the engine to list and inspect containers."""
    handed = _claim_handed_over(owner, profile, run_id, key or profile.key)
    if handed is not None:
        return handed
    name = name or f"crucible-{run_id}"
    started_here = _claim_started_here(owner, key or profile.key, name)
    if started_here is not None:
        _claimed_for_a_run(owner)
        return started_here
    try:
        candidates = idle(owner, key or profile.key)
    except Exception as exc:
        log.warning("warm pool of %s: cannot list idle sandboxes: %s", owner, exc)
        return None
    for container_id in candidates:
        try:
            engine.client().api.rename(container_id, name)
        except docker.errors.APIError:
            continue  # taken (renamed or removed) a moment ago
        _claimed_for_a_run(owner)
        try:
            return Sandbox.adopt(container_id, profile)
        except Exception as exc:
            log.warning("a claimed pool sandbox %s could not be adopted: %s", container_id[:12], exc)
            containers.remove(container_id)
    return None


# Sandboxes this process's ``WarmPool`` started, newest last, per (owner, profile key): a claim in this
# process takes one by its rename alone, without asking the engine to list and inspect (about 5 ms of
# a run's path). One gone meanwhile (drained, removed as dead or by the reconciler) fails the
# rename and is skipped; one whose process died is passed over. A forked work horse claims by listing
# only (``_forget_in_child``).
_started_here: dict[tuple[str, str], list[Sandbox]] = {}
_started_here_lock = threading.Lock()


_refill_events: dict[str, threading.Event] = {}


def _refill_wanted(owner: str) -> threading.Event:
    """Set when a claim in this process took one of ``owner``'s sandboxes: its pool's refill wakes."""
    with _started_here_lock:
        return _refill_events.setdefault(owner, threading.Event())


_runs_over: dict[str, threading.Event] = {}


def _run_over_event(owner: str) -> threading.Event:
    """Set when the run that last claimed one of ``owner``'s sandboxes in this process is over."""
    with _started_here_lock:
        return _runs_over.setdefault(owner, threading.Event())


def _claimed_for_a_run(owner: str) -> None:
    _run_over_event(owner).clear()
    _refill_wanted(owner).set()


def run_over(owner: str) -> None:
    """The run that claimed one of ``owner``'s sandboxes has ended and its result is handed over: the
    pool's refill, waiting for this (``REFILL_AFTER_CLAIM_MAX_S`` at most), may start a sandbox now."""
    _run_over_event(owner).set()


def _remember_started(owner: str, key: str, sandbox: Sandbox, keep: int) -> None:
    with _started_here_lock:
        started = _started_here.setdefault((owner, key), [])
        started.append(sandbox)
        del started[:-keep]


def _claim_started_here(owner: str, key: str, name: str) -> Sandbox | None:
    while True:
        with _started_here_lock:
            started = _started_here.get((owner, key))
            if not started:
                return None
            sandbox = started.pop()
        if not _still_running(sandbox):
            continue  # the next refill removes it (``remove_dead``)
        try:
            engine.client().api.rename(sandbox.container_id, name)
        except docker.errors.APIError:
            continue  # gone, or taken a moment ago
        except Exception as exc:
            log.warning("warm pool of %s: cannot rename %s: %s", owner, sandbox.container_id[:12], exc)
            return None
        sandbox.measure_baseline()  # what gVisor's own kernel holds now, before the program
        return sandbox


def _forget_in_child() -> None:
    """A forked child (RQ's work horse, with WORKER_FORK) claims through the engine's listing, which
    shows only sandboxes nobody renamed, never from its copy of the parent's ``_started_here``: the
    parent hears of no claim a horse makes, so a later horse would find there a sandbox an earlier
    one claimed (still running that run's program if that horse was killed before its removal), and
    a rename by id succeeds whatever the container is named now. The resets in the background
    (``_handovers``) were threads of the parent, which the child does not have. Locks another thread
    held at the fork are replaced."""
    global _started_here_lock, _handovers_lock
    _started_here_lock = threading.Lock()
    _handovers_lock = threading.Lock()
    _started_here.clear()
    _handovers.clear()


def _still_running(sandbox: Sandbox) -> bool:
    """Whether its container still has processes: read from its cgroup (no engine call), else asked."""
    procs = sandbox.cgroup.procs_file() if sandbox.cgroup is not None and sandbox.cgroup.available else None
    try:
        if procs is not None:
            return bool(procs.read_text().strip())
        return bool(engine.client().api.inspect_container(sandbox.container_id)["State"]["Running"])
    except (OSError, docker.errors.APIError):
        return False


# --- Sandboxes kept for the next sample of the same batch (``reuse: "batch"``) --------------------


def reuse_key(profile: Profile, group: str) -> str:
    """The profile label of sandboxes reused within ``group`` (a batch): never claimed by another."""
    return f"{profile.key}.reuse-{_safe(group)}"


def create_reusable(owner: str, profile: Profile, run_id: str, group: str, *, kept: bool = False) -> Sandbox:
    """A new sandbox for ``run_id`` that may later be parked for ``group`` (labelled as ``owner``'s pool,
    so the reconciler removes it with the pool of a worker that is gone). ``kept``: one this process
    hands over to its next sample without renaming it (``park_in_background``), named as kept."""
    return Sandbox.create(
        profile,
        run_id=f"pool-{uuid.uuid4().hex[:12]}",
        name=f"{_kept_prefix(owner)}{uuid.uuid4().hex[:12]}" if kept else f"crucible-{run_id}",
        labels={LABEL_POOL: owner, LABEL_PROFILE: reuse_key(profile, group)},
    )


def claim_to_keep(owner: str, profile: Profile, run_id: str) -> Sandbox | None:
    """One of ``owner``'s warm sandboxes of ``profile`` for the first sample of a batch this process
    resets in the background (``park_in_background``), named as ``create_reusable`` names a kept one:
    a sandbox already started (and past its first second: a gVisor sandbox's clock is a system call
    until then), fresh and locked down as a new one is; None when the pool has none idle. It keeps
    its pool profile's label: the pool counts it as one of its own until it is removed (``refill_once``),
    so the pool is refilled once the batch is done with it, not while its samples run."""
    return claim(owner, profile, run_id, name=f"{_kept_prefix(owner)}{uuid.uuid4().hex[:12]}")


def park(sandbox: Sandbox, owner: str) -> bool:
    """Put a sandbox that was reset (``Sandbox.reset``) back as idle in ``owner``'s pool, under the
    reuse key it was created with, named with the time it was parked (``expire_parked``)."""
    try:
        name = f"{_idle_prefix(owner)}{PARKED}{int(time.time())}-{uuid.uuid4().hex[:8]}"
        engine.client().api.rename(sandbox.container_id, name)
    except docker.errors.APIError as exc:
        log.warning("could not park sandbox %s: %s", sandbox.container_id[:12], exc)
        return False
    return True


# --- Reset in the background, handed to this process's next claim of the same key ------------------
# A worker that runs its jobs in its own process resets a batch's sandbox while it records the sample
# and takes its next job, instead of before; the next claim of that batch waits for the reset. The
# sandbox is handed over only once the reset verified it clean, exactly as ``park`` after a reset in
# the foreground: what each sample finds is the same, only the waiting moves.
#
# It is not renamed (two engine round trips a sample): it stays ``crucible-kept-...``, which no other
# claim lists (``_unclaimed``) and the reconciler's orphan sweep leaves alone (its name names no run).
# This process alone holds it: one claim takes it out of ``_handovers`` under the lock, or
# ``expire_kept`` or a drain does and removes it. Its worker gone, the reconciler removes it
# (``remove_pools_of``, ``remove_kept``) once that worker has no live run that could be using it.


@dataclass
class _Handover:
    """One sandbox being reset for ``key``: ``sandbox`` once kept (None: discarded), ``done`` then set."""

    key: str
    done: threading.Event = field(default_factory=threading.Event)
    sandbox: Sandbox | None = None
    abandoned: bool = False  # its claim stopped waiting: the sandbox is removed, not kept
    kept_at: float = 0.0  # monotonic, when it was reset and kept
    # Held to decide kept-or-abandoned: a claim that gives up as the reset ends must not leave a
    # kept sandbox that nothing holds any more (it would outlive its expiry).
    lock: threading.Lock = field(default_factory=threading.Lock)


_handovers: dict[str, list[_Handover]] = {}  # owner -> its sandboxes being reset, oldest first
_handovers_lock = threading.Lock()
os.register_at_fork(after_in_child=_forget_in_child)


def park_in_background(sandbox: Sandbox, owner: str, key: str, reset_and_park: Callable[[Sandbox], bool]) -> None:
    """Run ``reset_and_park(sandbox)`` (True: reset verified clean) in a thread; a sandbox that did not
    verify clean is removed there. ``claim`` of ``key`` in this process waits for it and takes it as it
    is (a kept sandbox, ``create_reusable``), not renamed."""
    handover = _Handover(key)
    with _handovers_lock:
        _handovers.setdefault(owner, []).append(handover)

    def finish() -> None:
        parked = False
        try:
            parked = reset_and_park(sandbox)
        except Exception:
            log.exception("resetting sandbox %s failed", sandbox.container_id[:12])
        with handover.lock:
            parked = parked and not handover.abandoned
            handover.sandbox = sandbox if parked else None
            handover.kept_at = time.monotonic()
            handover.done.set()
        if not parked:
            sandbox.remove()

    threading.Thread(target=finish, name=f"sandbox-reset-{sandbox.container_id[:12]}", daemon=True).start()


def _take_handover(owner: str, key: str) -> _Handover | None:
    with _handovers_lock:
        pending = _handovers.get(owner, [])
        for handover in pending:
            if handover.key == key:
                pending.remove(handover)
                return handover
    return None


def _claim_handed_over(owner: str, profile: Profile, run_id: str, key: str) -> Sandbox | None:
    """The sandbox this process reset in the background for ``key``, once kept, for ``run_id``."""
    handover = _take_handover(owner, key)
    if handover is None:
        return None
    handover.done.wait(settings.SANDBOX_ENGINE_TIMEOUT_S)
    if _abandon_unless_done(handover):
        return None  # still resetting: removed once done (the run starts cold)
    parked = handover.sandbox
    if parked is None:
        return None  # discarded: it did not verify clean
    if not parked.serve_idle():
        # Its container was removed under it (the reconciler took its worker for dead) or something
        # wrote to its serve exec since the reset: any doubt, a new sandbox.
        log.warning("a kept sandbox %s is not idle any more: removed", parked.container_id[:12])
        parked.remove()
        return None
    sandbox = Sandbox(parked.container_id, parked.image_id, profile, parked.created_at)
    sandbox.memory_mb = parked.memory_mb  # the cgroup keeps the last program's limit
    sandbox.serving, parked.serving = parked.serving, None
    sandbox.measure_baseline()
    return sandbox


def wait_for_handovers(owner: str, timeout_s: float, *, abandon: bool = True) -> None:
    """Wait (up to ``timeout_s`` in all) for ``owner``'s resets in the background to keep or discard.
    With ``abandon`` (a drain) nothing will claim them through this process any more: one still
    resetting is removed once its reset ends, and the kept ones are removed now."""
    deadline = time.monotonic() + timeout_s
    with _handovers_lock:
        pending = list(_handovers.pop(owner, []) if abandon else _handovers.get(owner, []))
    for handover in pending:
        handover.done.wait(max(0.0, deadline - time.monotonic()))
        if abandon and not _abandon_unless_done(handover) and handover.sandbox is not None:
            handover.sandbox.remove()


def _abandon_unless_done(handover: _Handover) -> bool:
    """Mark a handover whose reset has not ended as abandoned (its thread removes the sandbox); False
    when the reset had ended (its sandbox, if kept, is the caller's to take or remove)."""
    with handover.lock:
        if handover.done.is_set():
            return False
        handover.abandoned = True
        return True


def expire_kept(owner: str, idle_for_s: float) -> list[str]:
    """Remove the sandboxes this process kept for ``owner`` that no claim took within ``idle_for_s``."""
    now = time.monotonic()
    with _handovers_lock:
        pending = _handovers.get(owner, [])
        expired = [h for h in pending if h.done.is_set() and now - h.kept_at >= idle_for_s]
        for handover in expired:
            pending.remove(handover)
    removed = []
    for handover in expired:
        if handover.sandbox is not None:
            handover.sandbox.remove()
            removed.append(handover.sandbox.container_id)
    return removed


def kept(owner: str) -> list[str]:
    """Ids of ``owner``'s kept sandboxes (``create_reusable`` with ``kept``, ``claim_to_keep``), in use or
    waiting."""
    return [c["Id"] for c in _named(_pool_containers(owner), _kept_prefix(owner))]


def remove_kept(owner: str) -> list[str]:
    """Remove ``owner``'s kept sandboxes (its worker is gone and has no live run that could use one)."""
    removed = []
    for container_id in kept(owner):
        containers.remove(container_id)
        removed.append(container_id)
    return removed


def expire_parked(owner: str, idle_for_s: float, unclaimed: list[dict] | None = None) -> list[str]:
    """Remove ``owner``'s parked sandboxes nobody claimed within ``idle_for_s`` (their batch is done).
    ``unclaimed``: the engine's listing of them, if just made (``_unclaimed``)."""
    removed = []
    prefix = "/" + _idle_prefix(owner) + PARKED
    now = time.time()
    for found in _unclaimed(owner) if unclaimed is None else unclaimed:
        for name in found.get("Names") or []:
            if name.startswith(prefix):
                parked_at = name[len(prefix) :].split("-", 1)[0]
                if parked_at.isdigit() and now - int(parked_at) >= idle_for_s:
                    containers.remove(found["Id"])
                    removed.append(found["Id"])
    return removed


def remove_pools_of(
    owner: str, spare: Callable[[str], bool] = lambda _run_id: False, *, busy: bool = False
) -> list[str]:
    """Remove every container of ``owner``'s pool (its worker is gone), idle or claimed, but those
    claimed by a run for which ``spare(run_id)`` says the run still has them (the run ends with its
    container; if its worker really is gone, the reconciler removes a lost run's containers), and,
    when ``busy`` (``owner`` has a live run), its kept sandboxes: that run may be using one."""
    removed = []
    kept_prefix = "/" + _kept_prefix(owner)
    for found in _pool_containers(owner):
        if busy and any(name.startswith(kept_prefix) for name in found.get("Names") or []):
            continue
        run_id = containers.run_of(found)
        if not run_id.startswith("pool-") and not run_id.startswith("kept-") and spare(run_id):
            continue
        containers.remove(found["Id"])
        removed.append(found["Id"])
    return removed


def idle_by_owner() -> dict[str, int]:
    """How many idle sandboxes each owner's pool holds now (this instance's, on this engine)."""
    counts: dict[str, int] = {}
    for owner in pool_owners():
        counts[owner] = len(idle(owner))
    return counts


def pool_owners() -> set[str]:
    """The owners of this instance's pool containers."""
    found = engine.client().api.containers(
        all=True, filters={"label": [f"{LABEL_INSTANCE}={settings.CRUCIBLE_INSTANCE}", LABEL_POOL]}
    )
    return {(c.get("Labels") or {}).get(LABEL_POOL, "") for c in found} - {""}


@dataclass
class PoolStats:
    """What a pool did: sandboxes started for it, the time each start took, runs that found one or not."""

    started: int = 0
    start_ms: list[float] = field(default_factory=list)
    hits: int = 0
    misses: int = 0
    failures: int = 0


class WarmPool:
    """``size`` idle sandboxes per profile of ``profiles()`` for the worker ``owner``, refilled in a thread."""

    def __init__(self, owner: str, size: int, profiles: Callable[[], list[Profile]]):
        self.owner = owner
        self.size = size
        self.profiles = profiles
        self.stats = PoolStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused_until = 0.0

    def start(self) -> None:
        """Refill (and expire parked sandboxes) in a thread; none without a pool and without reuse."""
        if (self.size <= 0 and settings.SANDBOX_REUSE_IDLE_S <= 0) or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._refill_forever, name=f"warm-pool-{self.owner}", daemon=True)
        self._thread.start()

    def drain(self) -> list[str]:
        """Stop refilling and remove the idle sandboxes (claimed ones end with their run)."""
        self._stop.set()
        _refill_wanted(self.owner).set()  # wake the refill thread, to see it must stop
        _run_over_event(self.owner).set()  # (also when it waits for a run to be over)
        if self._thread is not None:
            self._thread.join(timeout=settings.SANDBOX_ENGINE_TIMEOUT_S + 5)
        wait_for_handovers(self.owner, settings.SANDBOX_ENGINE_TIMEOUT_S + 5)
        removed = []
        for container_id in idle(self.owner):
            try:
                containers.remove(container_id)
                removed.append(container_id)
            except Exception as exc:
                log.warning("draining pool sandbox %s: %s", container_id[:12], exc)
        return removed

    def refill_once(self) -> int:
        """Start what is missing for each profile; how many were started. Stopped sandboxes and
        parked ones left unclaimed for ``SANDBOX_REUSE_IDLE_S`` are removed first. The engine is
        asked to list the pool's sandboxes once per pass (it was three times, four passes a second
        per worker: a tenth of a busy worker's time, and the engine's, went to those listings)."""
        listed = _pool_containers(self.owner)
        unclaimed = _named(listed, _idle_prefix(self.owner))
        gone = set(remove_dead(self.owner, unclaimed))
        gone.update(expire_parked(self.owner, settings.SANDBOX_REUSE_IDLE_S, unclaimed))
        gone.update(expire_kept(self.owner, settings.SANDBOX_REUSE_IDLE_S))
        running = [c for c in unclaimed if c.get("State") == "running" and c["Id"] not in gone]
        # A warm sandbox a batch took to keep (``claim_to_keep``: named kept, labelled with the pool's
        # profile) holds its place while it lives: no sandbox starts beside the batch's samples.
        running += [
            c for c in _named(listed, _kept_prefix(self.owner)) if c.get("State") == "running" and c["Id"] not in gone
        ]
        started = 0
        for profile in self.profiles():
            of_profile = [c for c in running if (c.get("Labels") or {}).get(LABEL_PROFILE) == profile.key]
            missing = self.size - len(of_profile)
            for _ in range(max(0, missing)):
                if self._stop.is_set():
                    return started
                self._start_one(profile)
                started += 1
        return started

    def _start_one(self, profile: Profile) -> None:
        began = time.perf_counter()
        sandbox = Sandbox.create(
            profile,
            run_id=f"pool-{uuid.uuid4().hex[:12]}",
            name=f"{_idle_prefix(self.owner)}{uuid.uuid4().hex[:12]}",
            labels={LABEL_POOL: self.owner, LABEL_PROFILE: profile.key},
            # A one-program run takes its program over attach (a compiled one, or several programs, by exec).
            attachable=attach_suits(profile),
        )
        _remember_started(self.owner, profile.key, sandbox, keep=max(1, self.size) * 4)
        self.stats.started += 1
        self.stats.start_ms.append((time.perf_counter() - began) * 1000)
        del self.stats.start_ms[:-100]

    def _refill_forever(self) -> None:
        """A pass when a claim took a sandbox (``_refill_wanted``), else every ``CHECK_EVERY_S``."""
        wanted = _refill_wanted(self.owner)
        while not self._stop.is_set():
            wanted.clear()  # a claim during the pass below sets it again: then another pass follows at once
            if time.monotonic() >= self._paused_until:
                try:
                    self.refill_once()
                except (SandboxSetupError, RuntimeUnknown, docker.errors.DockerException, OSError) as exc:
                    self.stats.failures += 1
                    self._paused_until = time.monotonic() + FAILURE_PAUSE_S
                    log.warning("warm pool of %s: could not start a sandbox: %s", self.owner, exc)
            if wanted.wait(CHECK_EVERY_S) and not self._stop.is_set():
                # A claim: the sandbox that replaces it starts once the run that took it is over.
                _run_over_event(self.owner).wait(REFILL_AFTER_CLAIM_MAX_S)
