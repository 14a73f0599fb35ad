"""The services the suite actually runs against are the ones the environment names. `.ci/run`
runs the suite twice, with the embedded defaults and with DATABASE_URL (PostgreSQL) and
REDIS_URL set; these tests prove which ones each pass used, over real connections."""

import os
import uuid

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.django_db
def test_the_database_is_the_one_database_url_names():
    expected = "postgresql" if DATABASE_URL.startswith(("postgres://", "postgresql://")) else "sqlite"
    assert connection.vendor == expected
    if expected == "postgresql":
        # pytest-django's own database beside the one named, dropped when the run ends.
        assert connection.settings_dict["NAME"] == "test_" + DATABASE_URL.rsplit("/", 1)[-1]


def test_the_cache_is_redis_when_redis_url_is_set():
    import redis

    key = f"backend-probe-{uuid.uuid4().hex}"
    cache.set(key, "here", 30)
    assert cache.get(key) == "here"
    if not REDIS_URL:
        assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
        return
    # Read back over a connection of our own: the value really is in that Redis database.
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        assert raw.exists(cache.make_key(key)) == 1
    finally:
        raw.close()


async def test_the_channel_layer_is_redis_when_redis_url_is_set():
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert type(layer).__name__ == ("RedisChannelLayer" if REDIS_URL else "InMemoryChannelLayer")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "probe", "n": 1})
    assert await layer.receive(channel) == {"type": "probe", "n": 1}


@pytest.mark.django_db
def test_tasks_are_queued_in_the_database():
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    before = OrmQ.objects.count()
    async_task("math.floor", 1.5)
    assert OrmQ.objects.count() == before + 1
    assert OrmQ.objects.db == "default"
