"""The platform's side of the inference service: a JSON-able `GenerationSpec`, and two
backends that generate one and yield the same events.

- `LocalBackend` (STEERLAB_INFERENCE=local, the default): the scheduler runs in this process,
  on a background thread that owns the model; this event loop only awaits its events.
- `ChannelBackend` (STEERLAB_INFERENCE=worker): the spec travels over the channel layer (Redis)
  to `manage.py inference_worker`, which runs the same scheduler, so several daphne processes
  share one model. A worker that stops answering is noticed by silence: it sends a heartbeat
  every second while it holds a request.

Events are dicts: {"type": "token", "text"}, then one of {"type": "done", "finish", "tokens",
"first_token_ms"} or {"type": "error", "code", "message", "retry_after"}.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from steering.engine import GenerationParams, GenerationRequest
from steering.inference.scheduler import Busy, Scheduler, SchedulerClosed, TooManyForUser

REQUEST_CHANNEL = "steerlab-inference"

log = logging.getLogger(__name__)


@dataclass
class GenerationSpec:
    """What a generation needs, in plain data: steering is named (vector set and strengths),
    never shipped as tensors, and resolved by whichever process owns the model."""

    prompt_ids: list[int]
    params: dict = field(default_factory=dict)
    vector_set_id: int | None = None
    strengths: dict[str, float] = field(default_factory=dict)
    user: str = ""

    def to_request(self) -> GenerationRequest:
        """Resolve steering against this process's model (loads the vector file once)."""
        from steering import runtime
        from steering.models import VectorSet

        steering = {}
        if self.strengths:
            vector_set = VectorSet.objects.get(pk=self.vector_set_id)
            steering = runtime.site_vectors(vector_set).layer_deltas(self.strengths)
        return GenerationRequest(prompt_ids=self.prompt_ids, params=GenerationParams(**self.params), steering=steering)


def error_event(code: str, message: str, retry_after: int | None = None) -> dict:
    return {"type": "error", "code": code, "message": message, "retry_after": retry_after}


async def run_on_scheduler(scheduler: Scheduler, spec: GenerationSpec, cancelled: asyncio.Event) -> AsyncIterator[dict]:
    """Generate `spec` on a scheduler in this process, yielding events; setting `cancelled`
    frees the row at the next decode step. Used by the local backend and by the worker."""
    from steering import runtime
    from steering.models import VectorSet

    try:
        request = await sync_to_async(spec.to_request, thread_sensitive=False)()
    except VectorSet.DoesNotExist:
        yield error_event("not_found", f"Vector set {spec.vector_set_id} no longer exists")
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
    try:
        async for event in ticket:
            if event.text:
                yield {"type": "token", "text": event.text}
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
                "first_token_ms": None if ticket.time_to_first_token is None else round(ticket.time_to_first_token * 1000),
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
        from steering import runtime

        return run_on_scheduler(runtime.site_scheduler(), spec, cancelled)


class ChannelBackend:
    """The scheduler lives in `manage.py inference_worker`, reached over the channel layer."""

    async def generate(self, spec: GenerationSpec, cancelled: asyncio.Event) -> AsyncIterator[dict]:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        request_id = uuid.uuid4().hex
        # A plain channel of its own, not a process-local "!" one: channels_redis multiplexes
        # those through one shared poll, which a consumer closing elsewhere in this process can
        # cancel mid-pop, losing a message; a plain channel is popped by this receive alone.
        reply = f"steerlab-reply-{request_id}"
        silence = settings.STEERLAB_WORKER_SILENCE_S
        worker: str | None = None
        finished = False
        await layer.send(
            REQUEST_CHANNEL, {"type": "inference.generate", "id": request_id, "reply": reply, "spec": asdict(spec)}
        )
        receive = asyncio.ensure_future(layer.receive(reply))
        cancel_wait = asyncio.ensure_future(cancelled.wait())
        try:
            while True:
                done, _ = await asyncio.wait({receive, cancel_wait}, timeout=silence, return_when=asyncio.FIRST_COMPLETED)
                if cancel_wait in done and worker is not None:
                    await layer.send(worker, {"type": "inference.cancel", "id": request_id})
                    cancel_wait = asyncio.ensure_future(asyncio.Event().wait())  # tell it once
                if receive not in done:
                    if not done:
                        finished = True
                        yield error_event(
                            "worker_unavailable",
                            f"The inference worker did not answer for {silence:g} s; try again shortly.",
                            5,
                        )
                        return
                    continue
                message = receive.result()
                receive = asyncio.ensure_future(layer.receive(reply))
                kind = message.get("type")
                if kind == "inference.accepted":
                    worker = message["worker"]
                    if cancelled.is_set():
                        await layer.send(worker, {"type": "inference.cancel", "id": request_id})
                elif kind == "inference.event":
                    event = message["event"]
                    finished = event["type"] in ("done", "error")
                    yield event
                    if finished:
                        return
                # inference.heartbeat: only proves the worker is alive
        finally:
            receive.cancel()
            cancel_wait.cancel()
            if not finished and worker is not None:
                await layer.send(worker, {"type": "inference.cancel", "id": request_id})


def backend() -> LocalBackend | ChannelBackend:
    return ChannelBackend() if settings.STEERLAB_INFERENCE == "worker" else LocalBackend()
