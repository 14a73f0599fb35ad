"""A few thousand random and malformed frames over one /ws/chat/ socket: each is answered with
exactly one error frame (never "internal", which would mean a server bug), the socket stays
open, nothing is logged, and a valid generate afterwards still works. Seeded, so a failure
replays: FUZZ_SEED and FUZZ_FRAMES change the run."""

from __future__ import annotations

import json
import os
import random

import pytest
from asgiref.sync import sync_to_async

from steering.models import InteractionLog
from tests.ws.conftest import connect, frames_until_end

pytestmark = pytest.mark.django_db(transaction=True)

SEED = int(os.environ.get("FUZZ_SEED", "20261127"))
FRAMES = int(os.environ.get("FUZZ_FRAMES", "2500"))

HUGE_INTS = [-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400]
ODD_FLOATS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"]
WEIRD_TEXT = ["", " ", "\x00", "\ud800", "\U0001f600" * 50, "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "<script>", "' OR 1=1 --", "%s%n", "é" * 3000]


def random_text(rng: random.Random, size: int = 40) -> str:
    alphabet = [chr(rng.randrange(0x20, 0x7F)) for _ in range(8)] + ["\x00", "\n", "é", "中", "\U0001f600", "\ud83d"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(size)))


def random_value(rng: random.Random, depth: int = 0):
    """Any JSON value, of any type, sometimes large or odd."""
    kinds = ["int", "float", "str", "bool", "null", "list", "dict"] if depth < 3 else ["int", "str", "null"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice(HUGE_INTS + [rng.randrange(-1000, 1000)])
    if kind == "float":
        return rng.choice([rng.uniform(-1e6, 1e6), 1e308, -1e-308, 0.5])
    if kind == "str":
        return rng.choice(WEIRD_TEXT + [random_text(rng)])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_text(rng, 12): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


# A generate frame with exactly these fields broken: each always makes the frame invalid.
BROKEN_FIELDS = {
    "prompt": lambda rng: rng.choice([None, [], {}, "", "   ", "\x00", "x" * 5000, True]),
    "max_new_tokens": lambda rng: rng.choice([0, -5, 10**6, "many", 2.5, [], {}, True]),
    "temperature": lambda rng: rng.choice([-1, 3, "hot", [], 1e308]),
    "top_p": lambda rng: rng.choice([0, -0.5, 1.5, "all", {}]),
    "top_k": lambda rng: rng.choice([-1, 10**6, "k", [1]]),
    "seed": lambda rng: rng.choice([-1, 2**64, 10**400, "seed", [], 1.5]),
    "preferences": lambda rng: rng.choice([
        [], "formal", 5, {"formality": 2}, {"formality": "x"}, {"formality": None}, {"formality": [1]},
        {"formality": {"a": 1}}, {"no-such-dimension": 0.5}, {random_text(rng, 10) or "?": 0.5},
        {f"d{i}": 0.1 for i in range(100)}, {"formality": True},
    ]),
    "vector_set": lambda rng: rng.choice([-1, 0, 10**30, 2**63, "one", [], {}, 99999, 1.5]),
    "conversation_id": lambda rng: rng.choice([-1, 0, 10**30, 2**63, "one", [], {}, 99999]),
    "new_conversation": lambda rng: rng.choice(["perhaps", 7, [], {}]),
    "tag": lambda rng: rng.choice(["t" * 41, [], {}]),
    "session_id": lambda rng: rng.choice(["s" * 101, [], {}]),
}


def raw_json_with(field: str, literal: str) -> str:
    """A generate frame whose `field` is a bare JSON literal json.dumps would never write."""
    return '{"type": "generate", "prompt": "hi", "%s": %s}' % (field, literal)


def bad_frame(rng: random.Random) -> dict:
    """One malformed frame: {"text": …} or {"bytes": …}, for WebsocketCommunicator.send_to."""
    kind = rng.randrange(12)
    if kind == 0:
        return {"bytes": rng.randbytes(rng.randrange(1, 300))}
    if kind == 1:  # not JSON
        # (The test communicator cannot send an empty frame: " " stands in for it.)
        return {"text": rng.choice([random_text(rng, 200) or " ", "{", '{"type": "generate"', "\ud800", " ", "NaN]"])}
    if kind == 2:  # JSON, but not an object
        return {"text": json.dumps(rng.choice([[], [1, 2], 5, "generate", None, True, 1.5, [{"type": "ping"}]]))}
    if kind == 3:  # an object whose type is missing, not a string, or unknown
        frame = {key: random_value(rng) for key in ("prompt", random_text(rng, 8))}
        if rng.random() < 0.7:
            frame["type"] = rng.choice([None, 1, [], {}, True, "GENERATE", "generate ", "ping!", random_text(rng, 60)])
        return {"text": json.dumps(frame)}
    if kind == 4:  # deep nesting, under and over the frame size limit
        depth = rng.choice([1000, 30000, 70000])
        return {"text": rng.choice(["[", '{"a":']) * depth}
    if kind == 5:  # oversized
        return {"text": json.dumps({"type": "generate", "prompt": "x" * rng.randrange(65 * 1024, 200 * 1024)})}
    if kind == 6:  # a cancel naming nothing this socket runs, in any type
        return {"text": json.dumps({"type": "cancel", "request_id": rng.choice(
            [random_text(rng, 20) or "x", 5, [], {}, [1, 2], {"a": 1}, True, 1.5, "0" * 10000])})}
    if kind == 7:  # NaN, Infinity and huge numbers where numbers go
        field = rng.choice(["temperature", "top_p", "max_new_tokens", "seed", "vector_set", "conversation_id"])
        return {"text": raw_json_with(field, rng.choice(ODD_FLOATS + ["1" * 500]))}
    if kind == 8:
        return {"text": raw_json_with("preferences", '{"formality": %s}' % rng.choice(ODD_FLOATS))}
    if kind == 9 and rng.random() < 0.3:  # within the character limit, past the model's context in tokens
        return {"text": json.dumps({"type": "generate", "prompt": "steer " * rng.randrange(300, 600),
                                    "max_new_tokens": 2})}
    # a generate frame with one to three broken fields, amid random extra ones
    frame = {"type": "generate", "prompt": "Say hi.", "max_new_tokens": 2}
    for field in rng.sample(sorted(BROKEN_FIELDS), rng.randrange(1, 4)):
        frame[field] = BROKEN_FIELDS[field](rng)
    for _ in range(rng.randrange(3)):
        frame.setdefault(random_text(rng, 10) or "_", random_value(rng))
    return {"text": json.dumps(frame)}


# Valid frames the fuzz sends (a set not found, a prompt over the context) spend the user's chat
# budget: a small one, so that its refusals are fuzzed too.
BUDGET = 40


async def test_thousands_of_bad_frames_each_get_an_error_and_the_socket_survives(world, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "chat": f"{BUDGET}/hour"},
    }
    rng = random.Random(SEED)
    ws, connected, _ = await connect(world.alice)
    assert connected
    codes: dict[str, int] = {}
    for index in range(FRAMES):
        frame = bad_frame(rng)
        await ws.send_to(text_data=frame.get("text"), bytes_data=frame.get("bytes"))
        try:
            reply = await ws.receive_json_from(timeout=20)
        except Exception as exc:  # a crashed consumer closes the socket or never answers
            pytest.fail(f"frame {index} (seed {SEED}) got no answer: {exc!r}\n{str(frame)[:500]}")
        assert reply["type"] == "error" and reply["code"] != "internal", (index, str(frame)[:500], reply)
        if reply["code"] == "too_many":
            assert isinstance(reply["retry_after"], int) and reply["retry_after"] > 0, reply
        assert await ws.receive_nothing(timeout=0), f"frame {index} got more than one answer"
        codes[reply["code"]] = codes.get(reply["code"], 0) + 1
    assert await ws.receive_nothing(timeout=0.5), "a late second answer"
    # Every kind of refusal was reached, so the generator really covers the protocol.
    assert {"bad_frame", "bad_json", "unknown_type", "invalid", "not_found", "bad_request", "too_many"} <= set(codes), codes
    logged = await sync_to_async(lambda: list(InteractionLog.objects.exclude(pk__in=[world.interaction.pk, world.unrated.pk]).values()))()
    assert not logged, logged  # nothing generated, nothing logged

    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    from django.core.cache import cache

    await sync_to_async(cache.clear)()  # a fresh budget: the generate below must run
    await ws.send_json_to({"type": "generate", "prompt": "Say hi.", "max_new_tokens": 3})
    frames = await frames_until_end(ws, timeout=60)
    assert frames[-1]["type"] == "done", frames[-1]
    await ws.disconnect()
