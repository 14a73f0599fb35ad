"""Fixtures shared by the whole suite.

Three users, as in healthchecks: alice owns data, bob is another user who must never see or
change it, and charlie is staff (shared vector sets, the admin).
"""

import signal
import sys

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
    """Staff with the steering app's model permissions (staff actions check them, not is_staff)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("charlie", "charlie@example.org", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="steering"))
    return user


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny

    loaded = build_tiny("llama")
    directory = tmp_path_factory.mktemp("models") / "tiny-llama"
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_site(settings, tmp_path, tiny_model_dir):
    """A tiny Llama saved to a directory and made the site's model (STEERLAB_MODEL), so that
    tasks and commands load it by path as they would any model (once per process, keyed by
    its path); media go to a temporary folder."""
    settings.STEERLAB_MODEL = str(tiny_model_dir)
    settings.STEERLAB_DEVICE = "cpu"
    settings.MEDIA_ROOT = tmp_path / "media"
    return tiny_model_dir


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def timeout_never_lost(monkeypatch):
    """For tests that end a task with django-q2's SIGALRM timeout (TimeoutHandler): the alarm's
    exception surfaces in whatever Python code runs when it lands, and if that is a weakref or
    gc callback (hypothesis installs one), Python reports it as unraisable and drops it; a real
    worker's guard then kills the process (the hook tests cover that). Re-arm once the exception
    was dropped, so the test sees the exception our code does see, never a lost one."""
    from django_q.exceptions import TimeoutException

    dropped = sys.unraisablehook

    def rearm(unraisable):
        if isinstance(unraisable.exc_value, TimeoutException):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
        else:
            dropped(unraisable)

    monkeypatch.setattr(sys, "unraisablehook", rearm)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Browser tests first: their live server is a forked child of this process, and a fork
    taken after this process has run the model (torch's thread pools, the scheduler's thread)
    would inherit them half-alive."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("browser") else 1)
