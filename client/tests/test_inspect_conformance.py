"""Inspect AI's own conformance suite for sandbox providers, run against the Crucible provider.

``inspect_ai.util._sandbox.self_check`` is Inspect's portable suite (its module docstring says how
a provider runs it): its checks are pulled in below and run against a real Crucible (Daphne and a
session host, tests/stack.py) through ``CrucibleSandboxEnvironment``. They share one session, as
Inspect's own runner shares one container; each check cleans up after itself.

Inspect's two kill checks (``test_exec_timeout_kills_process``, ``…_kills_child_processes``) look
for the processes with ``ps``, which the sandbox image does not have: there they pass whatever
happened to the processes. The checks at the end of this module look in /proc instead, and first
show that the probe does see a live process, so they can fail.

Expected failures (declared in ``sandbox_env``, keyed on the check's name, strict):

* ``test_exec_as_user``: it needs root inside the sandbox (``adduser`` as ``user="root"``). A
  Crucible sandbox runs as the non-root user ``sandbox`` with every capability dropped and
  ``no-new-privileges``: it has no root and cannot switch users, so the provider raises
  ``SandboxUserUnsupportedError`` for any other user (which ``test_exec_as_nonexistent_user``
  accepts).

The tests are not database tests: the user and token are committed once for the module (the
stack's processes must see them) and removed at its end.
"""

from __future__ import annotations

import time
import uuid

import anyio
import pytest
from crucible_client import Client
from crucible_client.inspect_provider import CrucibleSandboxEnvironment
from inspect_ai.util._sandbox.self_check import *  # noqa: F403 (Inspect's checks, collected as tests here)

from tests.stack import live_sessions_stack  # noqa: F401 (the fixture)

NEEDS_ROOT = {
    "test_exec_as_user": "needs root inside the sandbox (adduser as user='root'); a Crucible sandbox runs as the "
    "non-root user 'sandbox' with capabilities dropped and cannot switch users",
}


@pytest.fixture(scope="module")
def ingrid_token(django_db_setup, django_db_blocker):
    """An API token of ingrid (an Inspect user), committed so that the stack's processes see it."""
    from django.contrib.auth import get_user_model

    from apps.accounts.models import ApiToken

    with django_db_blocker.unblock():
        ingrid = get_user_model().objects.create_user("ingrid", "ingrid@example.com", "ingrid-password-1")
        key = ApiToken.issue(ingrid, "inspect")[1]
    yield key
    with django_db_blocker.unblock():
        get_user_model().objects.filter(pk=ingrid.pk).delete()


@pytest.fixture(scope="module")
def ingrids_session(live_sessions_stack, ingrid_token):  # noqa: F811
    """One session for every check of the module (deleted at its end)."""
    client = Client(live_sessions_stack.url, ingrid_token)
    sandbox = client.sandboxes.create(metadata={"suite": "inspect self_check"})
    yield client, sandbox
    client.sandboxes.delete(sandbox["id"])
    client.close()


@pytest.fixture
async def sandbox_env(request, ingrids_session):
    """What Inspect's checks ask for: a SandboxEnvironment (here over the module's session)."""
    reason = NEEDS_ROOT.get(request.node.originalname)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))
    client, sandbox = ingrids_session
    return CrucibleSandboxEnvironment(Client(client.url, client.token), sandbox, task_name="self_check")


# --- what Inspect's kill checks cannot see in an image without ps ------------------------------------

SLEEPER = "import time; time.sleep(60)"
LIST_PROCESSES = ["sh", "-c", "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\"; echo; done 2>/dev/null"]


def marker(what: str) -> str:
    return f"crucible-{what}-{uuid.uuid4().hex[:12]}"


async def running(sandbox_env, name: str) -> bool:
    listing = await sandbox_env.exec(LIST_PROCESSES)
    assert listing.success, listing.stderr
    return name in listing.stdout


async def test_the_process_probe_sees_a_live_process(sandbox_env):
    name = marker("probe")
    script = f"python3 -c '{SLEEPER}' {name} & sleep 0.5; {LIST_PROCESSES[2]}; kill $!"
    assert name in (await sandbox_env.exec(["sh", "-c", script])).stdout


async def test_a_timed_out_command_and_its_children_leave_no_process_behind(sandbox_env):
    parent, child = marker("parent"), marker("child")
    script = f"python3 -c '{SLEEPER}' {child} & python3 -c '{SLEEPER}' {parent}; :"
    with pytest.raises(TimeoutError):
        await sandbox_env.exec(["sh", "-c", script], timeout=2)
    assert not await running(sandbox_env, parent)
    assert not await running(sandbox_env, child)


async def test_a_process_an_exec_leaves_behind_is_killed_at_its_timeout(sandbox_env):
    name = marker("orphan")
    orphan = f"(python3 -c '{SLEEPER}' {name} > /dev/null 2>&1 &) ; echo started"
    started = await sandbox_env.exec(["sh", "-c", orphan], timeout=5)
    assert started.stdout == "started\n"
    assert await running(sandbox_env, name)  # the exec has returned; its timeout has not passed yet
    deadline = time.monotonic() + 35  # the timeout (5 s) and a bounded grace
    while await running(sandbox_env, name):
        assert time.monotonic() < deadline, f"{name} outlived its exec's timeout"
        await anyio.sleep(0.5)


async def test_a_command_may_run_for_longer_than_a_few_seconds(sandbox_env):
    """Agents build and test for minutes: an exec is not cut short by any timeout but its own."""
    result = await sandbox_env.exec(["sh", "-c", "sleep 8; echo done"], timeout=60)
    assert (result.returncode, result.stdout) == (0, "done\n")
