"""Shared fixtures: named people (an owner, another researcher, an operator), API clients, clean queues."""

import django_rq
import pytest
from channels.layers import channel_layers
from django.conf import settings
from rest_framework.test import APIClient
from rq.suspension import resume


@pytest.fixture
def alice(django_user_model):
    """A researcher: owns evaluations."""
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password-1")


@pytest.fixture
def bob(django_user_model):
    """Another researcher: must never see alice's evaluations."""
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-password-1")


@pytest.fixture
def olivia(django_user_model):
    """An operator (staff)."""
    return django_user_model.objects.create_user("olivia", "olivia@example.com", "olivia-password-1", is_staff=True)


def _client_for(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def anonymous_api():
    return APIClient()


@pytest.fixture
def alice_api(alice):
    return _client_for(alice)


@pytest.fixture
def bob_api(bob):
    return _client_for(bob)


@pytest.fixture
def olivia_api(olivia):
    return _client_for(olivia)


@pytest.fixture(autouse=True)
def default_runtimes(request):
    """Transactional tests flush the database, data migrations included: put the runtimes back."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and not {"db", "transactional_db", "live_server"} & set(request.fixturenames):
        return
    request.getfixturevalue("transactional_db" if marker and marker.kwargs.get("transaction") else "db")
    from apps.evaluations.models import Runtime
    from apps.evaluations.runtimes import ensure_default_runtimes

    ensure_default_runtimes(Runtime)


@pytest.fixture(autouse=True)
def live_stack_settled(request):
    """A test on the live stack ends once the runs it started have ended: the stack's worker would
    otherwise still write to the tables the test's flush empties (tests/stack.py, ``settle``)."""
    if "live_stack" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so flushed after the wait
    stack = request.getfixturevalue("live_stack")
    yield
    resume(django_rq.get_connection(next(iter(settings.RQ_QUEUES))))  # a paused queue would never drain
    stack.settle()


@pytest.fixture(autouse=True)
def kill_switch_released():
    """No test leaves the queues paused for the next one (the flag lives in Redis, not the test DB)."""
    connection = django_rq.get_connection(next(iter(settings.RQ_QUEUES)))
    resume(connection)
    yield
    resume(connection)


@pytest.fixture
def empty_queues():
    """Nothing left on this test process's queues by an earlier test."""
    for name in settings.RQ_QUEUES:
        django_rq.get_queue(name).empty()


@pytest.fixture(autouse=True)
def sign_in_throttle_forgotten():
    """Failed sign-ins are counted in Redis, not the test database: no test inherits another's."""
    from apps.accounts import throttle

    throttle.forget_everything()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Every test starts with a new channel layer. The process's layer is made once and kept, but each
    async test runs on its own event loop, and channels_redis binds its receive locks to the loop that
    first waited on them: a receive one test left cancelled would make another test's receive fail."""
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def websocket_connections_closed():
    """The consumers' database threads keep their connections between calls (crucible/ws_db.py):
    each test ends with them closed, so none outlives the test database (or a test that flushes it)."""
    yield
    from crucible import ws_db

    ws_db.close_kept_connections()


@pytest.fixture(scope="session")
def compiled_helper(tmp_path_factory):
    """The in-sandbox helper compiled for this host (it is static), to test the parts that are safe
    outside a sandbox: the collector and the launcher with a harmless command."""
    from apps.sandboxing.image import compile_helper

    return compile_helper(tmp_path_factory.mktemp("helper") / "crucible-helper")
