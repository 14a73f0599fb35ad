"""Settings for the test suite: steerlab_site.settings, fed a throwaway SECRET_KEY.

The settings module requires SECRET_KEY whenever DEBUG is off, and tests run with DEBUG off as
production does. pytest-django imports this module before any conftest.py runs, so this is the
one place that can supply the key before steerlab_site.settings reads it. An explicit
SECRET_KEY in the environment still wins. Nothing outside pytest.ini names this module.
"""

import os

os.environ.setdefault("SECRET_KEY", "insecure-key-for-the-test-suite-only")

from steerlab_site.settings import *  # noqa: E402, F403

# Password hashing is deliberately slow; the suite creates many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
