"""The platform's side of the inference service: a JSON-able `GenerationSpec`, and two
backends that generate one and yield the same events.

- `LocalBackend` (STEERLAB_INFERENCE=local, the default): the scheduler runs in this process,
  on a background thread that owns the model; this event loop only awaits its events.
- `WorkerBackend` (STEERLAB_INFERENCE=worker): the spec travels through a Redis stream to
  `manage.py inference_worker`, which runs the same scheduler, so several daphne processes
  share one model. Each request is served by one worker at a time; when a worker dies, a
  survivor resumes its streams (`steering.serving.redis_streams`, `steering.serving.worker`).
  With no survivor, the silence of the worker ends the request with an error.

Events are dicts: {"type": "token", "text"} (worker mode also says which worker serves the
request: {"type": "worker", "worker", "resumed_at"}, again after each move), then one of {"type": "done", "finish", "tokens",
"prompt_tokens", "first_token_ms", "conditions", "readout"} or {"type": "error", "code", "message", "retry_after"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from steering.engine import GenerationParams, GenerationRequest
from steering.engine.prompting import WordedPrompt
from steering.engine.readout import summarise
from steering.inference import Busy, Scheduler, SchedulerClosed, TooManyForUser
from steering.serving import redis_streams, runtime

log = logging.getLogger(__name__)


@dataclass
class GenerationSpec:
    """What a generation needs, in plain data: steering is named (vector set and strengths),
    never shipped as tensors, and resolved by whichever process owns the model. `params` may
    be given as GenerationParams' keywords (a spec read back from JSON): they are checked once,
    here."""

    prompt_ids: list[int]
    params: GenerationParams = field(default_factory=GenerationParams)
    vector_set_id: int | None = None
    strengths: dict[str, float] = field(default_factory=dict)
    user: str = ""
    generated_ids: list[int] = field(default_factory=list)  # a resumed stream's tokens so far
    # A resumed stream's conditions as its first worker decided them (ConditionalSteering.decided).
    decided: dict | None = None
    # Preferences also said in words where they apply (the prompt ids are then without words).
    worded: WordedPrompt | None = None
    # The VectorSet row itself when this process read it already (not sent to a worker,
    # which reads it by id): the local backend then resolves steering without a query.
    vector_set: object = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.params, dict):
            self.params = GenerationParams(**self.params)
        if isinstance(self.worded, dict):
            self.worded = WordedPrompt(**self.worded)

    def to_json(self) -> str:
        """The spec as a worker reads it: plain data, the vector set by id only."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "vector_set"})

    def to_request(self) -> GenerationRequest:
        """Resolve steering against this process's model (loads the vector file once)."""
        request = runtime.steered_request_for(self.vector_set_id, self.strengths, self.prompt_ids, self.params,
                                              generated_ids=self.generated_ids, vector_set=self.vector_set,
                                              worded=self.worded)
        request.readout = runtime.readout_for(self.vector_set_id, vector_set=self.vector_set)
        if self.decided and request.conditions is not None:
            request.conditions.decided(self.decided)
        return request


def error_event(code: str, message: str, retry_after: int | None = None) -> dict:
    return {"type": "error", "code": code, "message": message, "retry_after": retry_after}


async def run_on_scheduler(
    scheduler: Scheduler, spec: GenerationSpec, cancelled: asyncio.Event, *, every_token: bool = False,
    interval: float = 0.0,
) -> AsyncIterator[dict]:
    """Generate `spec` on a scheduler in this process, yielding events; setting `cancelled`
    frees the row at the next decode step. Used by the local backend and by the worker.
    `interval` > 0 joins the text of the tokens that arrived within it into one token event
    (one frame per interval for the doors; the first and the last are not held back).
    `every_token` (the worker) yields a token event with its `token_id` for every token of the
    answer, also those whose text is held back (part of a character), and before the first one
    a "decided" event (the conditions as decided, the prompt's length as served): a survivor
    resumes a dead worker's stream from these, with the same steering and words."""
    try:
        request = await sync_to_async(spec.to_request, thread_sensitive=False)()
    except runtime.VectorSetNotFound as exc:
        yield error_event("not_found", str(exc))
        return
    except runtime.VectorSetUnavailable as exc:  # the server's fault: its message names no path
        yield error_event("vector_set_unavailable", str(exc), 60)
        return
    except (LookupError, ValueError) as exc:  # an unknown dimension, a bad strength or parameter
        yield error_event("bad_request", f"Could not prepare the generation: {str(exc).strip(chr(39))}")
        return
    except Exception:
        log.exception("Preparing a generation failed")
        yield error_event("internal", "Something went wrong on the server; it has been logged.")
        return
    try:
        ticket = scheduler.submit(request, user=spec.user or None)
    except Busy as exc:
        yield error_event("busy", str(exc), exc.retry_after)
        return
    except TooManyForUser as exc:
        yield error_event("too_many", str(exc), 1)
        return
    except SchedulerClosed as exc:
        yield error_event("worker_unavailable", str(exc), 5)
        return
    except ValueError as exc:
        yield error_event("bad_request", str(exc))
        return
    watcher = asyncio.ensure_future(_cancel_when(cancelled, ticket))
    readings = []
    told = not every_token
    try:
        async for events in ticket.batches(interval):
            if not told:  # the prompt is read by now: its conditions decided, its words said
                told = True
                yield {"type": "decided", "prompt_tokens": len(request.prompt_ids),
                       "conditions": request.conditions.decision_dict() if request.conditions is not None else None}
            readings += [event.readout for event in events if event.readout is not None]
            if every_token:
                for event in events:
                    if event.token_id is not None and event.finish != "stop":
                        yield {"type": "token", "text": event.text, "token_id": event.token_id}
                    elif event.text:
                        yield {"type": "token", "text": event.text}
            elif text := "".join(event.text for event in events):
                yield {"type": "token", "text": text}
        if ticket.finish == "error" and ticket.fault == "request":
            yield error_event("unprocessable", ticket.error or "The generation failed")
        elif ticket.finish == "error":
            # The scheduler's message carries the exception; it is logged there, not shown.
            yield error_event("generation_failed", "The generation failed on the server; it has been logged.")
        else:
            yield {
                "type": "done",
                "finish": ticket.finish,
                "tokens": ticket.tokens,
                # The prompt as served: with the words of the worded dimensions that applied.
                "prompt_tokens": len(request.prompt_ids),
                "first_token_ms": None if ticket.time_to_first_token is None else round(ticket.time_to_first_token * 1000),
                # Which topical dimensions applied, and why (None: no topical dimension was gated).
                "conditions": request.conditions.decision_dict() if request.conditions is not None else None,
                # How the answer read on each dimension (None: no readout; see engine/readout.py).
                "readout": summarise(request.readout.dimensions, readings) if request.readout and readings else None,
            }
    finally:
        watcher.cancel()
        ticket.cancel()  # a consumer that stopped listening frees its row; a no-op once finished


async def _cancel_when(cancelled: asyncio.Event, ticket) -> None:
    await cancelled.wait()
    ticket.cancel()


class LocalBackend:
    """The scheduler lives in this process (started on first use)."""

    def generate(self, spec: GenerationSpec, cancelled: asyncio.Event) -> AsyncIterator[dict]:
        return run_on_scheduler(runtime.site_scheduler(), spec, cancelled,
                                interval=settings.STEERLAB_STREAM_INTERVAL_MS / 1000)


class WorkerBackend:
    """The scheduler lives in `manage.py inference_worker`, reached through Redis streams
    (`steering.serving.redis_streams`). Follows the request's reply stream in order, accepting
    events only from the worker that holds the request now; a move to another worker (the
    first one died) shows as a "worker" event in the stream of events, and the previous one
    is told to cancel, in case it was only paused."""

    async def generate(self, spec: GenerationSpec, cancelled: asyncio.Event) -> AsyncIterator[dict]:
        r = redis_streams.client()
        loop = asyncio.get_running_loop()
        request_id = uuid.uuid4().hex
        reply = redis_streams.reply_key(request_id)
        silence = settings.STEERLAB_WORKER_SILENCE_S
        entry = (
            await r.xadd(
                redis_streams.requests_key(), {"id": request_id, "spec": spec.to_json()},
                maxlen=MAX_QUEUE_ENTRIES, approximate=True,
            )
        ).decode()
        holder: str | None = None
        settled = False  # the holder wrote the last event (and so settled the request)
        heard = loop.time()
        last = "0-0"
        read: asyncio.Future | None = None
        frames = _Frames(settings.STEERLAB_STREAM_INTERVAL_MS / 1000, loop.time)
        cancel_wait = asyncio.ensure_future(cancelled.wait())

        async def tell_to_cancel(worker: str) -> None:
            await r.publish(redis_streams.cancel_channel(), json.dumps({"id": request_id, "worker": worker}))

        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(r.xread({reply: last}, count=64, block=frames.wait_ms(1000)))
                done, _ = await asyncio.wait({read, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
                if cancel_wait in done:
                    await tell_to_cancel(holder or "*")  # it answers with a "cancelled" done event
                    cancel_wait = asyncio.ensure_future(asyncio.Event().wait())  # tell it once
                if read not in done:
                    continue
                response, read = read.result(), None
                for _, entries in response or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        worker, event = redis_streams.decode_reply(fields)
                        if event["type"] == "accepted":
                            if holder is not None and worker != holder:
                                await tell_to_cancel(holder)  # taken over: the old one may be paused only
                            holder, heard = worker, loop.time()
                            if cancelled.is_set():
                                await tell_to_cancel(holder)
                            if text := frames.take():
                                yield {"type": "token", "text": text}
                            yield {"type": "worker", "worker": worker, "resumed_at": event.get("resumed_at", 0)}
                            continue
                        if worker != holder:
                            # The leases make this impossible; were it to happen, one worker's
                            # tokens must still never be mixed into another's answer.
                            log.error("Request %s: ignored an event from %s, which does not hold it", request_id, worker)
                            await tell_to_cancel(worker)
                            continue
                        heard = loop.time()
                        if event["type"] in ("heartbeat", "decided"):  # the workers' own bookkeeping
                            continue
                        if event["type"] == "token":
                            frames.add(event["text"])
                            continue
                        if text := frames.take():
                            yield {"type": "token", "text": text}
                        settled = event["type"] in ("done", "error")
                        yield event
                        if settled:
                            return
                if text := frames.take_due():
                    yield {"type": "token", "text": text}
                quiet = loop.time() - heard
                if quiet >= silence and not (quiet < 2 * silence + 2 and await _survivors(r, holder, silence)):
                    # Nobody left to take it over (or nobody did in time): the error frame.
                    yield error_event(
                        "worker_unavailable", f"The inference worker did not answer for {silence:g} s; try again shortly.", 5
                    )
                    return
        finally:
            cancel_wait.cancel()
            if read is not None:
                read.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(_withdraw(r, entry, reply, settled=settled))
            if not settled:
                with contextlib.suppress(Exception):
                    await asyncio.shield(tell_to_cancel(holder or "*"))


class _Frames:
    """The text of the tokens read from a worker's reply stream, given out at most once per
    `interval` (one frame each, as `Ticket.batches` does in this process): the first text as
    soon as it is read, the rest when the interval is out or before any other event."""

    def __init__(self, interval: float, clock) -> None:
        self.interval, self.clock = interval, clock
        self.text, self.due = "", 0.0

    def add(self, text: str) -> None:
        self.text += text

    def take(self) -> str:
        text, self.text = self.text, ""
        if text:
            self.due = self.clock() + self.interval
        return text

    def take_due(self) -> str:
        return self.take() if self.clock() >= self.due else ""

    def wait_ms(self, longest: int) -> int:
        """How long a read may block: no longer than until the held text is due."""
        if not self.text:
            return longest
        return max(1, min(longest, math.ceil((self.due - self.clock()) * 1000)))


MAX_QUEUE_ENTRIES = 100_000  # a bound on the stream, far above any real backlog (settled entries are deleted)


async def _survivors(r, holder: str | None, silence: float) -> bool:
    """Whether a worker other than the silent `holder` has shown life within the window: one
    that will take the request over once its lease has run out."""
    alive = await r.zrangebyscore(redis_streams.workers_key(), time.time() - silence, "+inf")
    return any(name.decode() != holder for name in alive)


async def _withdraw(r, entry: str, reply: str, *, settled: bool) -> None:
    """Drop the request from the queue (a no-op once its worker settled it) and its reply
    stream. Acknowledging it revokes the lease: a worker still serving an abandoned request
    is refused its next write and stops."""
    if not settled:
        await r.xack(redis_streams.requests_key(), redis_streams.GROUP, entry)
        await r.xdel(redis_streams.requests_key(), entry)
    await r.delete(reply)


def backend() -> LocalBackend | WorkerBackend:
    return WorkerBackend() if settings.STEERLAB_INFERENCE == "worker" else LocalBackend()
