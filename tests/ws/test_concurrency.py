import asyncio

import pytest

from tests.ws.conftest import connect, frames_until_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STRENGTHS = [-1.0, -0.7, -0.4, -0.1, 0.0, 0.3, 0.6, 1.0]
PROMPT = "How should I ask my manager for a day off?"


async def _ask(user, strength, *, delay=0.0):
    await asyncio.sleep(delay)
    ws, connected, _ = await connect(user)
    assert connected
    await ws.send_json_to({"type": "generate", "prompt": PROMPT, "max_new_tokens": 24,
                           "temperature": 0, "preferences": {"formality": strength}})
    frames = await frames_until_end(ws, timeout=300)
    await ws.disconnect()
    assert frames[-1]["type"] == "done", frames[-1]
    return frames[-1]["text"], sum(f["type"] == "token" for f in frames)


async def test_eight_concurrent_clients_each_get_exactly_their_solo_answer(steerable, django_user_model):
    from asgiref.sync import sync_to_async

    users = [await sync_to_async(django_user_model.objects.create_user)(f"user{i}") for i in range(8)]
    alone = [await _ask(user, s) for user, s in zip(users, STRENGTHS)]
    # Staggered arrivals: later clients join a batch that is already decoding.
    together = await asyncio.gather(*[_ask(u, s, delay=0.15 * i) for i, (u, s) in enumerate(zip(users, STRENGTHS))])
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert len({text for text, _ in alone}) >= 4  # the steering really differs between clients
