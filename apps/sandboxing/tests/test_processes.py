"""The process view's helpers, without the engine."""

from apps.sandboxing.processes import Process, deepest_first


def test_a_stopped_sandbox_is_killed_children_before_their_parents():
    view = [
        Process(1, 0, "docker-init"),
        Process(2, 1, "sleep"),
        Process(3, 0, "python3"),
        Process(4, 3, "python3"),
        Process(5, 4, "python3"),
        Process(6, 3, "python3"),
    ]
    assert deepest_first(view, keep={1, 2}) == [[5], [4, 6], [3]]


def test_a_parent_loop_in_a_hostile_view_still_ends():
    view = [Process(7, 8, "a"), Process(8, 7, "b")]
    assert sorted(pid for level in deepest_first(view, keep=set()) for pid in level) == [7, 8]
