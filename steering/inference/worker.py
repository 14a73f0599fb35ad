"""`manage.py inference_worker`: the inference service as its own process, fed through the
channel layer (Redis), so that several daphne processes share one model.

Every worker consumes the shared request channel (several workers, one per GPU, split the
load) and answers from a private channel of its own, which clients use to cancel. While it
holds a request it sends a heartbeat every second, so a client notices a dead worker by its
silence (ChannelBackend) instead of waiting forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from steering.inference.scheduler import Scheduler
from steering.inference.service import REQUEST_CHANNEL, GenerationSpec, error_event, run_on_scheduler

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0


class InferenceWorker:
    def __init__(self, layer, scheduler: Scheduler) -> None:
        self.layer = layer
        self.scheduler = scheduler
        self.channel: str | None = None
        self._cancels: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task] = set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self.channel = f"steerlab-worker-{uuid.uuid4().hex}"  # a plain channel: see ChannelBackend
        log.info("Inference worker listening on %s (private %s)", REQUEST_CHANNEL, self.channel)
        if ready is not None:
            ready.set()
        shared = asyncio.ensure_future(self.layer.receive(REQUEST_CHANNEL))
        private = asyncio.ensure_future(self.layer.receive(self.channel))
        try:
            while True:
                done, _ = await asyncio.wait({shared, private}, return_when=asyncio.FIRST_COMPLETED)
                if shared in done:
                    self._dispatch(shared.result())
                    shared = asyncio.ensure_future(self.layer.receive(REQUEST_CHANNEL))
                if private in done:
                    self._dispatch(private.result())
                    private = asyncio.ensure_future(self.layer.receive(self.channel))
        finally:
            shared.cancel()
            private.cancel()
            for event in self._cancels.values():
                event.set()
            for task in list(self._tasks):
                task.cancel()

    def _dispatch(self, message: dict) -> None:
        kind = message.get("type")
        log.debug("Inference worker received %s", kind)
        if kind == "inference.generate":
            task = asyncio.ensure_future(self._serve(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "inference.cancel":
            event = self._cancels.get(message.get("id"))
            if event is not None:
                event.set()
        else:
            log.warning("Inference worker ignored a message of type %r", kind)

    async def _serve(self, message: dict) -> None:
        request_id, reply = message["id"], message["reply"]
        cancelled = self._cancels[request_id] = asyncio.Event()
        sent = asyncio.get_running_loop().time()

        async def send(payload: dict) -> None:
            nonlocal sent
            sent = asyncio.get_running_loop().time()
            await self.layer.send(reply, payload)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                if asyncio.get_running_loop().time() - sent >= HEARTBEAT_S:
                    await send({"type": "inference.heartbeat"})

        beating = asyncio.ensure_future(heartbeat())
        try:
            await send({"type": "inference.accepted", "worker": self.channel})
            try:
                spec = GenerationSpec(**message["spec"])
            except TypeError as exc:
                await send({"type": "inference.event", "event": error_event("bad_request", str(exc))})
                return
            async with contextlib.aclosing(run_on_scheduler(self.scheduler, spec, cancelled)) as events:
                async for event in events:
                    await send({"type": "inference.event", "event": event})
        except Exception:
            log.exception("Inference worker failed serving %s", request_id)
            with contextlib.suppress(Exception):
                await send({"type": "inference.event", "event": error_event("internal", "The inference worker failed")})
        finally:
            beating.cancel()
            self._cancels.pop(request_id, None)
