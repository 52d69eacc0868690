"""Quotas: which one was hit, when to retry, recovery after the window, and user > group > default."""

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError

from apps.accounts import quotas
from apps.accounts.models import Quota
from apps.accounts.quotas import QuotaExceeded, UserLimits, enforce_submission_quota, limits_for
from crucible import redis_clients

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    """A controllable clock for the rate window (Redis stores the timestamps we pass it)."""

    class Clock:
        now = 1_900_000_000.0

        def advance(self, seconds):
            self.now += seconds

    clock = Clock()
    monkeypatch.setattr(quotas, "_now", lambda: clock.now)
    return clock


@pytest.fixture(autouse=True)
def _fresh_counters(alice, bob):
    quotas.reset_submission_quota(alice)
    quotas.reset_submission_quota(bob)
    yield
    quotas.reset_submission_quota(alice)
    quotas.reset_submission_quota(bob)


def test_defaults_come_from_settings(alice, settings):
    settings.QUOTA_SUBMISSIONS_PER_MINUTE = 7
    settings.QUOTA_MAX_ACTIVE = 3
    assert limits_for(alice) == UserLimits(
        submissions_per_minute=7, max_active=3, max_timeout_s=None, max_memory_mb=None, max_cpus=None
    )


def test_a_user_row_beats_a_group_row_which_beats_the_default(alice, bob, settings):
    settings.QUOTA_SUBMISSIONS_PER_MINUTE = 30
    settings.QUOTA_MAX_ACTIVE = 10
    researchers = Group.objects.get(name="Researchers")
    Quota.objects.create(group=researchers, submissions_per_minute=5, max_active=2, max_memory_mb=512)
    Quota.objects.create(user=alice, submissions_per_minute=100, max_cpus=0.5)

    alice_limits = limits_for(alice)
    assert alice_limits.submissions_per_minute == 100  # her own row
    assert alice_limits.max_active == 2  # her group's row (her own leaves it blank)
    assert alice_limits.max_memory_mb == 512
    assert alice_limits.max_cpus == 0.5
    assert alice_limits.max_timeout_s is None  # nobody set it: the platform maximum

    bob_limits = limits_for(bob)
    assert bob_limits.submissions_per_minute == 5
    assert bob_limits.max_active == 2
    assert bob_limits.max_cpus is None


def test_of_two_groups_the_more_generous_wins(alice):
    Quota.objects.create(group=Group.objects.get(name="Researchers"), submissions_per_minute=5)
    power = Group.objects.create(name="Power users")
    power.user_set.add(alice)
    Quota.objects.create(group=power, submissions_per_minute=50)
    assert limits_for(alice).submissions_per_minute == 50


def test_over_the_rate_raises_with_message_and_retry_after_then_recovers(alice, bob, clock):
    Quota.objects.create(user=alice, submissions_per_minute=3)
    for _ in range(3):
        enforce_submission_quota(alice, active_count=0)
        clock.advance(10)
    with pytest.raises(QuotaExceeded) as caught:
        enforce_submission_quota(alice, active_count=0)
    exceeded = caught.value
    assert exceeded.quota == "submissions_per_minute"
    assert "3 submissions per minute" in exceeded.message
    # The oldest of the three was 30 s ago: its slot frees in 30 s.
    assert exceeded.retry_after == 30

    # Another researcher is unaffected.
    enforce_submission_quota(bob, active_count=0)

    clock.advance(exceeded.retry_after)
    enforce_submission_quota(alice, active_count=0)  # recovered: one slot freed
    with pytest.raises(QuotaExceeded):
        enforce_submission_quota(alice, active_count=0)


def test_refused_submissions_do_not_use_up_the_rate(alice, clock):
    Quota.objects.create(user=alice, submissions_per_minute=2)
    enforce_submission_quota(alice, active_count=0)
    enforce_submission_quota(alice, active_count=0)
    for _ in range(5):
        with pytest.raises(QuotaExceeded):
            enforce_submission_quota(alice, active_count=0)
    clock.advance(61)
    enforce_submission_quota(alice, active_count=0)


def test_too_many_active_raises_naming_that_quota(alice, clock):
    Quota.objects.create(user=alice, max_active=2)
    enforce_submission_quota(alice, active_count=1)
    with pytest.raises(QuotaExceeded) as caught:
        enforce_submission_quota(alice, active_count=2)
    assert caught.value.quota == "max_active"
    assert "at most 2 evaluations may be queued or running at once" in caught.value.message
    assert caught.value.retry_after >= 1


def test_the_counter_lives_in_redis_so_every_process_sees_it(alice, clock):
    Quota.objects.create(user=alice, submissions_per_minute=1)
    enforce_submission_quota(alice, active_count=0)
    # A new connection, as another web process would have.
    redis_clients.client.cache_clear()
    with pytest.raises(QuotaExceeded):
        enforce_submission_quota(alice, active_count=0)


def test_a_quota_row_is_for_exactly_one_user_or_group(alice):
    with pytest.raises(IntegrityError):
        Quota.objects.create(user=alice, group=Group.objects.get(name="Researchers"))


def test_a_zero_rate_refuses_everything(alice, clock):
    Quota.objects.create(user=alice, submissions_per_minute=0)
    with pytest.raises(QuotaExceeded) as caught:
        enforce_submission_quota(alice, active_count=0)
    assert caught.value.retry_after == 60
