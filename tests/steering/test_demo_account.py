"""The demo account (demo / steerlab-demo) exists only in development: bootstrap creates it
when STEERLAB_DEMO_ACCOUNT is on, which DEBUG turns on and production settings refuse."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from steering.data import catalog
from steering.management.commands.bootstrap import DEMO_PASSWORD, DEMO_USERNAME
from steering.services import vector_sets
from tests.api.conftest import make_vectors
from tests.site.test_settings import error_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_set_ready(settings, tmp_path):
    """A ready shared set with every shipped dimension, so bootstrap computes nothing."""
    settings.MEDIA_ROOT = tmp_path
    names = catalog.dimension_names()
    for name in names:
        vector_sets.dimension_import_default(name=name)
    return vector_sets.vector_set_register(vectors=make_vectors(names), name="default")


def bootstrap() -> str:
    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def test_it_creates_no_demo_account_in_production(settings, default_set_ready):
    settings.STEERLAB_DEMO_ACCOUNT = False
    out = bootstrap()
    assert not get_user_model().objects.filter(username=DEMO_USERNAME).exists()
    assert DEMO_PASSWORD not in out and "no demo account" in out.lower()


def test_it_creates_the_demo_account_when_enabled(settings, default_set_ready):
    settings.STEERLAB_DEMO_ACCOUNT = True
    assert f"{DEMO_USERNAME} / {DEMO_PASSWORD}" in bootstrap()
    assert get_user_model().objects.get(username=DEMO_USERNAME).check_password(DEMO_PASSWORD)


def test_it_locks_a_demo_account_left_from_development(settings, default_set_ready):
    get_user_model().objects.create_user(DEMO_USERNAME, password=DEMO_PASSWORD)
    settings.STEERLAB_DEMO_ACCOUNT = False
    bootstrap()
    demo = get_user_model().objects.get(username=DEMO_USERNAME)
    assert not demo.check_password(DEMO_PASSWORD) and not demo.has_usable_password()


def test_it_leaves_a_demo_user_with_a_password_of_its_own(settings, default_set_ready):
    get_user_model().objects.create_user(DEMO_USERNAME, password="a password of its own")
    settings.STEERLAB_DEMO_ACCOUNT = False
    bootstrap()
    assert get_user_model().objects.get(username=DEMO_USERNAME).check_password("a password of its own")


def test_the_setting_follows_debug_and_production_refuses_it():
    show = "from steerlab_site import settings as s; print(s.STEERLAB_DEMO_ACCOUNT)"
    import os
    import subprocess
    import sys

    from tests.site.test_settings import REPO

    def value(**env):
        result = subprocess.run([sys.executable, "-c", show], cwd=REPO, capture_output=True, text=True, timeout=60,
                                env={"PATH": os.environ.get("PATH", ""), **env})
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert value(DEBUG="1") == "True"
    assert value(DEBUG="0", SECRET_KEY="s3cret") == "False"
    assert value(DEBUG="1", STEERLAB_DEMO_ACCOUNT="0") == "False"
    assert "STEERLAB_DEMO_ACCOUNT" in error_with(DEBUG="0", SECRET_KEY="s3cret", STEERLAB_DEMO_ACCOUNT="1")
