"""A stream resumed on another worker keeps its first worker's decision of the conditions, and
so its steering and its words: read again on the survivor, in another batch, a bfloat16 score
near its threshold could flip, and the rest of the answer would follow another prompt.

Real Redis and a real inference worker (this process's thread, `WorkerThread`); the first
worker is played by the test: it claims the request, writes what a worker writes (accepted, its
decision, some tokens), then falls silent, as a killed one does."""

import asyncio
import time
import uuid

import pytest
import redis

from steering.chat.turn import chat_prepare
from steering.models import PreferenceDimension, VectorSet
from steering.serving import redis_streams, runtime
from steering.serving.backends import GenerationSpec
from tests.api.conftest import dimensions  # noqa: F401 (a fixture)
from tests.api.test_chat_conditions import NEVER, conditional_set  # noqa: F401 (a fixture)
from tests.ws.conftest import WorkerThread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SILENCE_S = 1.0
TOKENS = 6


@pytest.fixture
def worker_redis(settings):
    settings.STEERLAB_INFERENCE = "worker"
    settings.STEERLAB_WORKER_SILENCE_S = SILENCE_S
    settings.REDIS_URL = settings.TEST_REDIS_URL
    settings.STEERLAB_QUEUE_PREFIX = f"steerlab-test-{uuid.uuid4().hex[:8]}"
    yield settings
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{settings.STEERLAB_QUEUE_PREFIX}:*"):
        client.delete(key)


async def resumed(spec: GenerationSpec, decided: dict, sent: list[int]) -> list[dict]:
    """The survivor's events for a request whose first worker wrote `decided` and `sent`, then died."""
    r = redis_streams.client()
    await redis_streams.ensure_group(r)
    request_id = uuid.uuid4().hex
    entry = (await r.xadd(redis_streams.requests_key(), {"id": request_id, "spec": spec.to_json()})).decode()
    assert await r.xreadgroup(redis_streams.GROUP, "first-worker", {redis_streams.requests_key(): ">"}, count=1)
    for event in ({"type": "accepted", "resumed_at": 0}, decided,
                  *({"type": "token", "text": "", "token_id": token} for token in sent)):
        assert await redis_streams.holder_write(r, entry=entry, request_id=request_id, worker="first-worker",
                                                mode="event", event=event)
    survivor = await asyncio.to_thread(WorkerThread().start)  # claims it once it has been silent SILENCE_S
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = [redis_streams.decode_reply(fields) for _, fields in await r.xrange(redis_streams.reply_key(request_id))]
            if events[-1][1]["type"] in ("done", "error"):
                return [event for worker, event in events if worker != "first-worker"]
            await asyncio.sleep(0.1)
        raise AssertionError(f"the request was not resumed: {events}")
    finally:
        await asyncio.to_thread(survivor.kill)


@pytest.mark.parametrize("sent", [2, TOKENS], ids=["mid-stream", "every-token-sent"])
async def test_a_resumed_stream_keeps_its_first_workers_decision_and_words(worker_redis, conditional_set, alice, sent):
    await VectorSet.objects.filter(pk=conditional_set.pk).aupdate(worded_dimensions=["cost"])
    plan = await asyncio.to_thread(
        chat_prepare, user=alice, prompt="hello world", preferences={"cost": 1.0}, vector_set_id=None,
        params={"max_new_tokens": TOKENS, "temperature": 0.0},
    )
    spec = GenerationSpec(prompt_ids=plan.prompt_ids, params=plan.generation, vector_set_id=plan.vector_set.pk,
                          strengths=plan.strengths, user=str(alice.pk), worded=plan.worded)
    loaded = await asyncio.to_thread(runtime.site_model)
    cost = (await PreferenceDimension.objects.aget(name="cost")).words()
    worded = len(loaded.chat_ids("hello world", system=f"Answer for someone who strongly prefers {cost[0]}."))
    assert worded > len(plan.prompt_ids)
    # The first worker read cost as applying; by its threshold the survivor's own reading never would.
    carried = {"cost": {"applied": True, "score": 0.5, "threshold": NEVER}}
    tokens = loaded.tokenizer.encode("yes, here is a short answer for you")[:sent]
    assert len(tokens) == sent
    events = await resumed(spec, {"type": "decided", "prompt_tokens": worded, "conditions": carried}, tokens)
    assert events[0] == {"type": "accepted", "resumed_at": sent}
    done = events[-1]
    assert done["type"] == "done" and done["tokens"] == TOKENS
    assert done["conditions"] == carried
    assert done["prompt_tokens"] == worded  # the words the first worker's decision said
    if sent < TOKENS:  # the survivor generated the rest, with the carried decision, and said so
        decided = next(e for e in events if e["type"] == "decided")
        assert decided == {"type": "decided", "prompt_tokens": worded, "conditions": carried}
