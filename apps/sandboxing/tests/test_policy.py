"""The run policy as data: what a caller may ask for, and the profile a sandbox is made of."""

import dataclasses

import pytest

from apps.sandboxing.policy import MINIMA, Limits, Profile, Runtime, maxima


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


def test_limit_settings_below_the_policys_minima_or_above_their_maximum_fail_the_system_check(settings):
    from apps.sandboxing.checks import limits_check

    assert limits_check(None) == []
    settings.SANDBOX_DEFAULT_CPUS = 0.05
    settings.SANDBOX_MAX_TIMEOUT_S = 5.0
    settings.SANDBOX_DEFAULT_TIMEOUT_S = 10.0
    messages = [error.msg for error in limits_check(None)]
    assert any(m.startswith("SANDBOX_DEFAULT_CPUS=0.05 is below") for m in messages)
    assert "SANDBOX_DEFAULT_TIMEOUT_S=10 is above SANDBOX_MAX_TIMEOUT_S=5." in messages
    assert len(messages) == 2


def test_a_compiled_runtimes_sandbox_has_room_for_its_compiler_and_an_interpreted_one_does_not():
    limits = Limits.from_settings(memory_mb=64)
    gcc = Runtime(
        image="i", command=["{build}/main"], file_name="main.c", compile_command=["gcc"], compile_memory_mb=512
    )
    python = Runtime(image="i", command=["python3", "{file}"], file_name="main.py", compile_memory_mb=512)
    assert gcc.sandbox_limits(limits).memory_mb == 512
    assert gcc.sandbox_limits(Limits.from_settings(memory_mb=1024)).memory_mb == 1024
    assert python.sandbox_limits(limits) == limits
    with pytest.raises(ValueError, match="compile_memory_mb"):
        Runtime(image="i", command=["x"], file_name="main.c", compile_command=["gcc"], compile_memory_mb=2)


def test_a_sandbox_that_is_not_attached_to_is_configured_with_the_sdks_own_arguments_only():
    """What the SDK cannot express (``masked_paths``, and ``stdin_once`` for an attached sandbox) is set
    by ``sandbox._engine_create``; the rest goes to ``containers.create`` as is (the fault suite does)."""
    from docker.models.containers import _create_container_args

    from apps.sandboxing.policy import container_config

    profile = Profile(image="crucible-sandbox:latest", limits=Limits.from_settings(), engine_runtime="runc")
    config = container_config(profile, name="crucible-x", run_id="x")
    assert "stdin_once" not in config
    sdk_arguments = {k: v for k, v in config.items() if k != "masked_paths"}
    _create_container_args({**sdk_arguments, "version": "1.41"})  # raises on unknown keys
    attached = container_config(profile, name="crucible-x", run_id="x", attachable=True)
    assert attached["stdin_once"] is True and attached["stdin_open"] is True
