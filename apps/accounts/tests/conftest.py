import pytest


def forget_sign_in_throttles():
    """allauth counts sign-in attempts in the cache (Redis), our throttle counts failures there too;
    start each test with none. Only those keys: the same Redis database also holds this worker's RQ queues.
    """
    from apps.accounts import throttle
    from apps.accounts.quotas import _redis

    client = _redis()
    keys = list(client.scan_iter(match="*allauth:rl:*", count=1000))
    if keys:
        client.delete(*keys)
    throttle.forget_everything()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    forget_sign_in_throttles()
    yield
    forget_sign_in_throttles()
