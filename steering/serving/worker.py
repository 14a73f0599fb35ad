"""`manage.py inference_worker`: the inference service as its own process, fed through a
Redis stream (see `steering.serving.redis_streams`), so that several daphne processes share one
model and several workers (one per GPU) share the load.

A worker takes new requests with `XREADGROUP` (each goes to one worker only) and writes each
request's events to its reply stream through the lease-checked script, which also renews its
lease; a request with nothing to say for a second gets a heartbeat, so its lease and the web
side's patience hold while it waits in the queue. Once a second the worker also takes over
(`XAUTOCLAIM`) the requests whose holder has been silent for the silence window, and resumes
each where its stream stopped: the prompt plus the tokens already sent are prefilled, with
the same steering and parameters, and a seeded sampler continues its sequence. A worker
that finds it has lost a lease (it was paused, and a survivor took over) stops that request
at once, without another word to the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid

from django.conf import settings

from steering.inference.scheduler import Scheduler
from steering.serving import redis_streams
from steering.serving.backends import GenerationSpec, error_event, run_on_scheduler

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
TAKE_OVER_BATCH = 16


class InferenceWorker:
    def __init__(self, scheduler: Scheduler, *, name: str | None = None) -> None:
        self.scheduler = scheduler
        # The host and pid in the name let an operator (and bench/worker_failover.py) tell
        # from XINFO CONSUMERS which process holds which requests.
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.silence_ms = int(settings.STEERLAB_WORKER_SILENCE_S * 1000)
        self._cancels: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        r = redis_streams.client()
        await redis_streams.ensure_group(r)
        await self._beat_once(r)
        pubsub = r.pubsub()
        await pubsub.subscribe(redis_streams.cancel_channel())
        log.info("Inference worker %s reading %s", self.name, redis_streams.requests_key())
        loops = [
            asyncio.ensure_future(self._take_new(r)),
            asyncio.ensure_future(self._take_over(r)),
            asyncio.ensure_future(self._listen_for_cancels(pubsub)),
            asyncio.ensure_future(self._beat(r)),
        ]
        if ready is not None:
            ready.set()
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop only ends by failing: say why
        finally:
            for task in loops:
                task.cancel()
            for event in self._cancels.values():
                event.set()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- the loops -------------------------------------------------------------------------

    async def _take_new(self, r) -> None:
        while True:
            try:
                response = await r.xreadgroup(redis_streams.GROUP, self.name, {redis_streams.requests_key(): ">"}, count=1, block=1000)
            except redis_streams.redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await redis_streams.ensure_group(r)  # the stream was deleted (a flushed Redis): start over
                continue
            for _, entries in response or []:
                for entry, fields in entries:
                    self._spawn(self._serve(r, entry.decode(), fields, taken_over=False))

    async def _take_over(self, r) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                _, entries, _ = await r.xautoclaim(
                    redis_streams.requests_key(), redis_streams.GROUP, self.name, self.silence_ms, "0-0", count=TAKE_OVER_BATCH
                )
            except redis_streams.redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                continue
            for entry, fields in entries:
                if fields is None:
                    continue  # deleted meanwhile: its web side gave up on it
                log.warning("Inference worker %s took over request entry %s", self.name, entry)
                await redis_streams.count(r, "claims")
                self._spawn(self._serve(r, entry.decode(), fields, taken_over=True))

    async def _listen_for_cancels(self, pubsub) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            notice = json.loads(message["data"])
            if notice.get("worker") in (self.name, "*"):
                event = self._cancels.get(notice.get("id"))
                if event is not None:
                    event.set()

    async def _beat(self, r) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self._beat_once(r)

    async def _beat_once(self, r) -> None:
        now = time.time()
        await r.zadd(redis_streams.workers_key(), {self.name: now})
        await r.zremrangebyscore(redis_streams.workers_key(), "-inf", now - 3600)  # long gone

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one request -----------------------------------------------------------------------

    async def _serve(self, r, entry: str, fields: dict, *, taken_over: bool) -> None:
        request_id = fields[b"id"].decode()
        cancelled = self._cancels[request_id] = asyncio.Event()
        written = asyncio.get_running_loop().time()

        async def write(event: dict | None, mode: str = "event") -> bool:
            nonlocal written
            written = asyncio.get_running_loop().time()
            held = await redis_streams.holder_write(r, entry=entry, request_id=request_id, worker=self.name, mode=mode, event=event)
            if not held:
                log.warning("Inference worker %s lost request %s to another worker; stopping it", self.name, request_id)
                cancelled.set()
            return held

        async def heartbeat() -> None:
            while not cancelled.is_set():
                await asyncio.sleep(HEARTBEAT_S)
                if asyncio.get_running_loop().time() - written >= HEARTBEAT_S:
                    await write({"type": "heartbeat"})

        beating = None
        try:
            sent_ids: list[int] = []
            decided: dict = {}
            if taken_over:
                sent_ids, decided, ended = await self._sent_so_far(r, request_id)
                if ended:  # the holder wrote its last event, then died before settling
                    await write(None, "settle")
                    return
            if not await write({"type": "accepted", "resumed_at": len(sent_ids)}):
                return
            beating = asyncio.ensure_future(heartbeat())
            try:
                spec = GenerationSpec(**{**json.loads(fields[b"spec"]), "generated_ids": sent_ids,
                                         "decided": decided.get("conditions")})
                limit = spec.params.max_new_tokens
            except (TypeError, ValueError) as exc:
                await write(error_event("bad_request", str(exc)), "final")
                return
            if taken_over:
                await redis_streams.count(r, "resumptions")
            if len(sent_ids) >= limit:  # every token was sent; only the end was missing
                await write({"type": "done", "finish": "length", "tokens": len(sent_ids), "first_token_ms": None,
                             **{key: decided[key] for key in ("prompt_tokens", "conditions") if key in decided}}, "final")
                return
            async with contextlib.aclosing(run_on_scheduler(self.scheduler, spec, cancelled, every_token=True)) as events:
                async for event in events:
                    final = event["type"] in ("done", "error")
                    if event["type"] == "done":
                        event["tokens"] += len(sent_ids)
                    if not await write(event, "final" if final else "event") or final:
                        return
        except Exception:
            log.exception("Inference worker failed serving %s", request_id)
            with contextlib.suppress(Exception):
                await write(error_event("internal", "The inference worker failed"), "final")
        finally:
            if beating is not None:
                beating.cancel()
            self._cancels.pop(request_id, None)

    @staticmethod
    async def _sent_so_far(r, request_id: str) -> tuple[list[int], dict, bool]:
        """The tokens the request's reply stream carries (every one a holder of its lease
        wrote: nobody else can), its first holder's "decided" event ({} if none was written),
        and whether it has ended."""
        ids, decided, ended = [], {}, False
        for _, fields in await r.xrange(redis_streams.reply_key(request_id)):
            _, event = redis_streams.decode_reply(fields)
            if event["type"] == "token" and event.get("token_id") is not None:
                ids.append(event["token_id"])
            elif event["type"] == "decided" and not decided:
                decided = event
            elif event["type"] in ("done", "error"):
                ended = True
        return ids, decided, ended
