"""The Redis side of worker mode: a work queue with acknowledgement, and a reply stream per
request that only the request's current holder can write to.

- Requests: one Redis stream, `<prefix>:inference:requests`, read by the consumer group
  `workers`. `XREADGROUP` hands each entry to exactly one worker, where it stays *pending*
  (its lease) until that worker settles it (`XACK` + `XDEL`). This replaces the shared
  channel of the channel layer, whose `receive` re-queues other consumers' in-flight
  messages and so let two workers generate one request.
- Leases: the pending entry's idle time is its holder's heartbeat. Every write the holder
  makes renews it (`XCLAIM … JUSTID` to itself); a holder silent for the silence window loses
  it to a survivor's `XAUTOCLAIM`, which resumes the stream.
- Replies: `<prefix>:inference:reply:<request id>`, a stream the web process reads in order.
  Every write goes through one Lua script that first checks, atomically, that the writer
  still holds the request's lease: a worker that was only paused, and lost its lease
  meanwhile, can neither write another token nor acknowledge someone else's work. So at most
  one worker serves a request at a time, by construction; the web side's check of the sender
  is a second line.
- Liveness: `<prefix>:inference:workers`, a sorted set of worker names by last heartbeat, tells
  a waiting web process whether any worker is left to take a silent request over.
- Counters: `<prefix>:inference:stats`, a hash (claims, resumptions), for /metrics.
- Cancels: pub/sub `<prefix>:inference:cancel`, the fast path to the worker serving a request.
  Losing such a message is harmless: a revoked lease (the web side acknowledges the entry
  itself when it gives up) stops the worker at its next write.

Replies travel over streams rather than the channel layer because the stream is the durable,
totally ordered record of what the client was sent: a survivor reads the tokens already sent
from it to resume, and the web process sees the move at one exact point of the stream.
"""

from __future__ import annotations

import asyncio
import json
import weakref

import redis.asyncio as redis
from django.conf import settings

GROUP = "workers"
REPLY_TTL_S = 600  # a reply stream outlives its request a little, then Redis drops it

# KEYS: requests stream, reply stream, stats hash. ARGV: group, entry id, consumer, mode,
# event JSON, reply TTL. Modes: "event" (write, renew), "final" (write, then settle),
# "settle". Returns 1, or 0 when the consumer does not hold the entry (any more).
_HOLDER_WRITES = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then
  return 0
end
if ARGV[4] ~= 'settle' then
  redis.call('XADD', KEYS[2], '*', 'worker', ARGV[3], 'event', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
if ARGV[4] == 'event' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
else
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
"""

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis] = weakref.WeakKeyDictionary()


def client() -> redis.Redis:
    """This event loop's Redis client: a client's connections belong to the loop that made
    them (tests run several loops; daphne runs one)."""
    loop = asyncio.get_running_loop()
    found = _clients.get(loop)
    if found is None:
        found = _clients[loop] = redis.Redis.from_url(settings.REDIS_URL or "redis://127.0.0.1:6379/0")
    return found


def _key(name: str) -> str:
    return f"{settings.STEERLAB_QUEUE_PREFIX}:inference:{name}"


def requests_key() -> str:
    return _key("requests")


def reply_key(request_id: str) -> str:
    return _key(f"reply:{request_id}")


def workers_key() -> str:
    return _key("workers")


def stats_key() -> str:
    return _key("stats")


def cancel_channel() -> str:
    return _key("cancel")


async def ensure_group(r: redis.Redis) -> None:
    try:
        await r.xgroup_create(requests_key(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def holder_write(r: redis.Redis, *, entry: str, request_id: str, worker: str, mode: str, event: dict | None = None) -> bool:
    """Write `event` to the request's reply stream as `worker` ("event": and renew the lease;
    "final": and settle the request), or only settle it ("settle") — all only if `worker`
    still holds the lease. False when it does not: the caller must stop serving."""
    result = await r.eval(
        _HOLDER_WRITES, 3, requests_key(), reply_key(request_id), stats_key(),
        GROUP, entry, worker, mode, json.dumps(event or {}), REPLY_TTL_S,
    )
    return bool(result)


def decode_reply(fields: dict) -> tuple[str, dict]:
    """(worker, event) of one reply stream entry."""
    return fields[b"worker"].decode(), json.loads(fields[b"event"])


async def count(r: redis.Redis, name: str) -> None:
    await r.hincrby(stats_key(), name, 1)


async def stats(r: redis.Redis) -> dict[str, int]:
    raw = await r.hgetall(stats_key())
    return {k.decode(): int(v) for k, v in raw.items()}
