"""The run policy as data: what a caller may ask for, and the profile a sandbox is made of."""

import dataclasses

import pytest

from apps.sandboxing.policy import MINIMA, Limits, Profile, maxima


def test_the_smallest_values_a_caller_may_ask_for_are_accepted():
    limits = Limits.from_settings(timeout_s=MINIMA.timeout_s, memory_mb=MINIMA.memory_mb, cpus=MINIMA.cpus)
    assert (limits.timeout_s, limits.memory_mb, limits.cpus) == (MINIMA.timeout_s, MINIMA.memory_mb, MINIMA.cpus)


@pytest.mark.parametrize("field", ["timeout_s", "memory_mb", "cpus"])
def test_less_than_the_minimum_is_refused_naming_the_field(field):
    below = {"timeout_s": MINIMA.timeout_s / 2, "memory_mb": MINIMA.memory_mb - 1, "cpus": MINIMA.cpus / 2}
    with pytest.raises(ValueError, match=field):
        Limits.from_settings(**{field: below[field]})


@pytest.mark.parametrize("field", ["timeout_s", "memory_mb", "cpus"])
def test_more_than_the_operators_maximum_is_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=field):
        Limits.from_settings(**{field: getattr(maxima(), field) * 2})


def test_profiles_of_the_same_image_runtime_and_limits_are_interchangeable(settings):
    settings.SANDBOX_RUNTIME = "runc"
    limits = Limits.from_settings()
    same = Profile(image="img", limits=dataclasses.replace(limits))
    assert Profile(image="img", limits=limits) == same
    assert len({Profile(image="img", limits=limits), same}) == 1
    assert Profile(image="img", limits=limits, engine_runtime="runsc") != same
