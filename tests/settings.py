"""Settings for the test suite: steerlab_site.settings, fed a throwaway SECRET_KEY.

The settings module requires SECRET_KEY whenever DEBUG is off, and tests run with DEBUG off as
production does. pytest-django imports this module before any conftest.py runs, so this is the
one place that can supply the key before steerlab_site.settings reads it. An explicit
SECRET_KEY in the environment still wins. Nothing outside pytest.ini names this module.
"""

import os

os.environ.setdefault("SECRET_KEY", "insecure-key-for-the-test-suite-only")
# The site's tests prove a request's text alone equals its text in a batch, bit for bit: that
# holds in float32, not in bfloat16 (whose kernels depend on the batch shape), which "auto"
# would pick on a CPU with avx512_bf16. The bf16 path has its own tests (tests/engine/test_bf16.py).
os.environ.setdefault("STEERLAB_DTYPE", "float32")

from steerlab_site.settings import *  # noqa: E402, F403

# Password hashing is deliberately slow; the suite creates many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The Redis the websocket tests use for the inference worker mode (running in CI and here).
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))

# asgi.py's origin check reads ALLOWED_HOSTS once, at import, before pytest-django adds
# "testserver"; the websocket tests present that origin.
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A test database on disk, not in memory: in-memory SQLite shares one cache between
    # threads with table locks that ignore the busy timeout, so the websocket tests' threads
    # (the consumer's, the scheduler's) would fail with "database table is locked". On disk
    # it behaves as production's file does (WAL, IMMEDIATE transactions).
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"steerlab-test-{os.getpid()}.sqlite3")
    }
else:
    # Name the test database explicitly. channels' live server (the browser tests) takes TEST.NAME
    # in its forked server process, or else prefixes "test_" to NAME, which pytest-django has by
    # then already replaced with the test database's name ("test_test_…" does not exist).
    DATABASES["default"].setdefault("TEST", {})  # noqa: F405
    DATABASES["default"]["TEST"].setdefault("NAME", "test_" + DATABASES["default"]["NAME"])  # noqa: F405

# The functional-range search on the real model (bootstrap's default set) answers 12 prompts per
# candidate in production; the tests check that it runs, chooses a candidate and is stored, not
# how noisy it is, and 3 prompts keep the bootstrap test to minutes.
STEERLAB_RANGE_PROMPTS = 3
