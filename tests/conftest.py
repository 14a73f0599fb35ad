"""Fixtures shared by the whole suite.

Three users, as in healthchecks: alice owns data, bob is another user who must never see or
change it, and charlie is staff (shared vector sets, the admin).
"""

import pytest

PASSWORD = "correct horse battery staple"


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", PASSWORD)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.org", PASSWORD)


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", "charlie@example.org", PASSWORD, is_staff=True)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests first: their live server is a forked child of this process, and a fork
    taken after this process has run the model (torch's thread pools, the scheduler's thread)
    would inherit them half-alive."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("browser") else 1)
