import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """allauth's sign-in throttles count in the cache (this test worker's own Redis database)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def token_header():
    def header(key):
        return {"HTTP_AUTHORIZATION": f"Token {key}"}

    return header
