"""The web server's process freezes what it loaded at start-up (``gc.freeze`` in ``crucible/asgi.py``):
the collector's full passes then walk only what came later. With a thousand viewers those passes,
each over every object Django and the libraries made at import, stopped a web process for
200-400 ms every 10-20 s. Other processes that import the application (tests, management commands)
are left as they are."""

from __future__ import annotations

from crucible.tests.web_process import printed_after_importing_the_application


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
