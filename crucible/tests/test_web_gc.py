"""The web server's process keeps long-lived objects out of the collector's full passes
(``crucible/web_gc.py``, installed by ``crucible/asgi.py``): what it loaded at start-up is frozen, and
so is what survives each full pass, so a thousand viewers' connections are not walked every few
seconds; every ``WEB_GC_THAW_S`` everything is thawed once, so cycles that died frozen are collected.
Other processes that import the application (tests, management commands) are left as they are."""

from __future__ import annotations

import gc
import weakref

import pytest

from crucible.tests.web_process import printed_after_importing_the_application
from crucible.web_gc import FreezeSurvivors


def frozen_after_import(*, settings_first: bool) -> int:
    """How many objects are frozen in a fresh interpreter once it has imported ``crucible.asgi``."""
    return int(
        printed_after_importing_the_application(
            "import gc; print(gc.get_freeze_count())", settings_first=settings_first
        )
    )


def test_the_web_servers_process_freezes_what_it_loaded_at_start_up():
    assert frozen_after_import(settings_first=False) > 100_000


def test_a_process_that_had_its_settings_first_is_left_as_it_is():
    assert frozen_after_import(settings_first=True) == 0


def test_the_web_servers_process_keeps_freezing_what_survives_a_full_pass():
    printed = printed_after_importing_the_application(
        "import gc\n"
        "before = gc.get_freeze_count()\n"
        "kept = [[i] for i in range(50_000)]\n"
        "gc.collect()\n"
        "print(gc.get_freeze_count() - before)"
    )
    assert int(printed) >= 50_000


class Connection:
    """Stands for a viewer's connection: objects in a cycle, freed only by the collector."""

    def __init__(self):
        self.itself = self


@pytest.fixture
def clock():
    now = [0.0]
    yield now
    gc.unfreeze()


@pytest.fixture
def policy(clock):
    survivors = FreezeSurvivors(600, clock=lambda: clock[0])
    gc.callbacks.append(survivors)
    yield survivors
    gc.callbacks.remove(survivors)


def test_what_survives_a_full_pass_is_frozen_and_not_walked_by_the_next(policy):
    connection = Connection()
    gc.collect()
    assert gc.get_freeze_count() > 0
    assert not any(o is connection for o in gc.get_objects(generation=2))


def test_a_connection_that_closes_while_frozen_is_collected_after_the_thaw(policy, clock):
    connection = Connection()
    closed = weakref.ref(connection)
    gc.collect()
    del connection
    gc.collect()
    assert closed() is not None, "frozen: its cycle waits for the thaw"

    clock[0] = 599.0
    gc.collect()
    assert closed() is not None

    clock[0] = 600.0
    gc.collect()  # this pass walks the young, then everything is thawed
    assert policy.thaws == 1
    gc.collect()  # this one walks everything
    assert closed() is None
    assert gc.get_freeze_count() > 0, "the survivors are frozen again"


def test_the_next_thaw_comes_a_whole_interval_after_the_thawed_pass(policy, clock):
    clock[0] = 600.0
    gc.collect()
    clock[0] = 900.0
    gc.collect()
    clock[0] = 1400.0
    gc.collect()
    assert policy.thaws == 1
    clock[0] = 1500.0
    gc.collect()
    assert policy.thaws == 2


def test_young_passes_change_nothing(policy):
    gc.collect(generation=1)
    assert gc.get_freeze_count() == 0
