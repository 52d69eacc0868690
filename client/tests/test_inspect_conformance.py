"""Inspect AI's own conformance suite for sandbox providers, run against the Crucible provider.

``inspect_ai.util._sandbox.self_check`` is Inspect's portable suite (its module docstring says how
a provider runs it): its checks are pulled in below and run against a real Crucible (Daphne and a
session host, tests/stack.py) through ``CrucibleSandboxEnvironment``. They share one session, as
Inspect's own runner shares one container; each check cleans up after itself.

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
