"""What every scheduler shares with its callers, whichever engine decodes: `Admission` (the
queue of waiting tickets, the refusals, `stats`, `close`), the refusals themselves (`Busy`,
`TooManyForUser`, `SchedulerClosed`) and `SchedulerStats`. The builtin `Scheduler`
(scheduler.py) and vLLM's `VllmScheduler` (steering/vllm_inference/) both build on it, so a request
is admitted and refused the same way on both.

`Ticket` is one admitted generation, as its caller sees it. The scheduler's thread pushes the request's `TokenEvent`s into the ticket; the caller reads
them in order, from a thread (`for event in ticket`, `ticket.get(timeout)`) or from asyncio
(`async for event in ticket`, `await ticket.next()`, or `ticket.batches(interval)`: what has
arrived, at most once per interval) without blocking the event loop: a waiting coroutine parks
on a future of its own loop, which the scheduler's thread completes through
`loop.call_soon_threadsafe`. Events are kept, so a reader that starts late misses nothing;
there is one read position, shared by all of a ticket's readers.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Hashable, Iterable

from steering.engine import GenerationRequest, LoadedModel, TokenEvent
from steering.engine.loading import claim_cores


class Ticket:
    """Handed out by `Scheduler.submit`. Besides the events it offers the outcome, filled in
    as the generation goes: `text` (so far, then final), `finish` (None until the end, then
    "stop", "length", "cancelled" or "error"), `error` (the message when finish is "error"),
    `fault` (then "request" or "server": whose fault it was),
    `tokens` (tokens of the answer), `time_to_first_token` and `latency` (seconds)."""

    def __init__(
        self,
        key: int,
        request: GenerationRequest,
        *,
        user: Hashable | None = None,
        on_cancel: Callable[[Ticket], None] | None = None,
    ) -> None:
        self.key = key
        self.request = request
        self.user = user
        self.text = ""
        self.finish: str | None = None
        self.error: str | None = None
        self.fault: str | None = None
        self.tokens = 0
        self.submitted_at = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._on_cancel = on_cancel
        self._events: list[TokenEvent] = []
        self._read = 0
        self._changed = threading.Condition()
        self._wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._end_wakers: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []  # woken by the last event only

    def __repr__(self) -> str:
        return f"<Ticket {self.key} user={self.user!r} tokens={self.tokens} finish={self.finish!r}>"

    @property
    def done(self) -> bool:
        return self.finish is not None

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted_at

    @property
    def latency(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.submitted_at

    def cancel(self) -> None:
        """Stop the generation: a waiting request leaves the queue at once, a running one
        leaves its batch at the next decode step. Either way a "cancelled" event ends the
        stream. Cancelling a finished ticket does nothing."""
        self.request.cancel.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    # -- reading, from a thread ------------------------------------------------------------

    def get(self, timeout: float | None = None) -> TokenEvent | None:
        """The next event, waiting for it up to `timeout` seconds (TimeoutError after that);
        None once the last event has been read."""
        with self._changed:
            if not self._changed.wait_for(self._readable, timeout):
                raise TimeoutError(f"No event for request {self.key} within {timeout} s")
            return self._take()

    def __iter__(self) -> Ticket:
        return self

    def __next__(self) -> TokenEvent:
        event = self.get()
        if event is None:
            raise StopIteration
        return event

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the generation has ended (True) or `timeout` seconds passed (False).
        Reads nothing: the events stay there for `get` and the iterators."""
        with self._changed:
            return self._changed.wait_for(lambda: self.finish is not None, timeout)

    # -- reading, from asyncio -------------------------------------------------------------

    async def next(self) -> TokenEvent | None:
        """The next event, without blocking the event loop; None once the last event has
        been read. Wrap it in `asyncio.wait_for` for a timeout."""
        loop = asyncio.get_running_loop()
        while True:
            with self._changed:
                if self._readable():
                    return self._take()
                waker = loop.create_future()
                self._wakers.append((loop, waker))
            await waker

    def __aiter__(self) -> Ticket:
        return self

    async def __anext__(self) -> TokenEvent:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    async def batches(self, interval: float) -> AsyncIterator[list[TokenEvent]]:
        """The events in lists: every event that has arrived, read at most once per `interval`
        seconds, except that the last one is read as soon as it comes (the stream's end never
        waits out an interval), and the first as soon as it comes after a quiet interval.

        Why: a reader that sends one frame per list (the chat's doors) then costs the event
        loop one wake-up and one frame per interval instead of one per token. With many
        streams on two cores that per-token Python competes with the decoding thread for the
        GIL and the cores (docs/vllm.md, "Where the served quarter goes"). While the reader
        waits out an interval, the scheduler's tokens do not wake the loop at all."""
        loop = asyncio.get_running_loop()
        due = 0.0
        while True:
            if interval > 0 and loop.time() < due:
                await self._end_or(loop, due)
            events = self._take_all()
            if not events:
                event = await self.next()  # a quiet interval: the next event comes at once
                if event is None:
                    return
                events = [event, *self._take_all()]
            yield events
            due = loop.time() + interval

    async def _end_or(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Sleep until `deadline` (loop time) or the stream's end, whichever comes first."""
        with self._changed:
            if self.finish is not None:
                return
            waker = loop.create_future()
            self._end_wakers.append((loop, waker))
        timer = loop.call_at(deadline, _wake, waker)
        try:
            await waker
        finally:
            timer.cancel()
            with self._changed:
                if (loop, waker) in self._end_wakers:
                    self._end_wakers.remove((loop, waker))

    # -- writing, from the scheduler -------------------------------------------------------

    def push(self, event: TokenEvent) -> None:
        """Record one event of this request (the scheduler's side; thread-safe)."""
        now = time.monotonic()
        with self._changed:
            if self.finish is not None:
                return  # a late event after a cancel or an error: the stream has ended
            self._events.append(event)
            self.text += event.text
            if event.token_id is not None:
                if self.first_token_at is None:
                    self.first_token_at = now
                if event.finish != "stop":  # the end-of-turn token is not part of the answer
                    self.tokens += 1
            if event.finish is not None:
                self.finish, self.error, self.finished_at = event.finish, event.error, now
                if event.finish == "error":
                    self.fault = event.fault or "server"
            self._changed.notify_all()
            wakers, self._wakers = self._wakers, []
            if self.finish is not None:
                wakers, self._end_wakers = wakers + self._end_wakers, []
        for loop, waker in wakers:
            try:
                loop.call_soon_threadsafe(_wake, waker)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting there any more

    def _readable(self) -> bool:
        return self._read < len(self._events) or self.finish is not None

    def _take_all(self) -> list[TokenEvent]:
        with self._changed:
            events, self._read = self._events[self._read:], len(self._events)
        return events

    def _take(self) -> TokenEvent | None:
        if self._read == len(self._events):
            return None
        self._read += 1
        return self._events[self._read - 1]


def _wake(waker: asyncio.Future) -> None:
    if not waker.done():  # a reader that was itself cancelled leaves a cancelled future
        waker.set_result(None)


class Busy(Exception):
    """The queue is full; `retry_after` is a hint, in whole seconds, of when a slot frees."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyForUser(Exception):
    """This user already has as many generations going as one user may have."""


class SchedulerClosed(RuntimeError):
    """The scheduler has been closed (or its thread has died) and takes no more requests."""


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot for health checks and metrics. `tokens_total` counts every token sampled
    (end-of-turn tokens included); `steps` counts decode forward passes, `prefills` the
    forward passes that started newcomers, `joins` the times newcomers merged into a running
    batch; `step_seconds` is a running mean of one decode step."""

    alive: bool
    waiting: int
    active_rows: int
    max_batch: int
    max_queue: int
    requests_total: int
    tokens_total: int
    steps: int
    prefills: int
    joins: int
    errors: int
    step_seconds: float


class Admission:
    """The callers' side of a scheduler, whichever engine runs it: the queue of waiting
    tickets, the refusals (`Busy`, `TooManyForUser`, `SchedulerClosed`, a ValueError for
    steering the model cannot take), `stats` and `close`. `Scheduler` and the vLLM engine's
    scheduler share it, so a request is admitted and refused the same way on both; each
    brings its thread (`_run`), its running tickets (`_running_tickets`) and its cancel."""

    loaded: LoadedModel

    def _admission_init(self, *, max_batch: int, max_queue: int, max_per_user: int | None) -> None:
        if max_batch < 1 or max_queue < 1 or (max_per_user is not None and max_per_user < 1):
            raise ValueError("max_batch, max_queue and max_per_user must be at least 1")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_per_user = max_per_user
        # Reentrant (a Condition's default lock), so a subclass may hold it around `_enqueue`
        # to finish a ticket before its thread can see it.
        self._lock = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._keys = itertools.count()
        self._closing = False
        self._counts = dict(requests_total=0, tokens_total=0, steps=0, prefills=0, joins=0, errors=0)
        self._step_seconds = 0.0

    def _start_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._engine_thread, name=name, daemon=True)
        self._thread.start()

    def _engine_thread(self) -> None:
        claim_cores()  # the cores are the engine's (loading.claim_cores says why)
        self._run()

    def _run(self) -> None:
        raise NotImplementedError

    def _running_tickets(self) -> list[Ticket]:
        """The tickets of the requests the engine is generating now (under the lock)."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _enqueue(self, request: GenerationRequest, user: Hashable | None, on_cancel) -> Ticket:
        """Queue `request` and return its ticket, or refuse it at once."""
        self._check_steering(request)
        with self._lock:
            if self._closing or not self._thread.is_alive():
                raise SchedulerClosed("The inference service has shut down")
            active = len(self._waiting) + len(self._running_tickets())
            if active >= self.max_queue:
                retry_after = self._retry_after()
                raise Busy(
                    f"The model is busy with {active} requests; try again in about {retry_after} s",
                    retry_after=retry_after,
                )
            if user is not None and self.max_per_user is not None:
                mine = sum(1 for ticket in self._active() if ticket.user == user)
                if mine >= self.max_per_user:
                    raise TooManyForUser(
                        f"You already have {mine} generations running (at most {self.max_per_user} at a "
                        "time); wait for one to finish or cancel it"
                    )
            ticket = Ticket(next(self._keys), request, user=user, on_cancel=on_cancel)
            self._waiting.append(ticket)
            self._counts["requests_total"] += 1
            self._lock.notify_all()
        return ticket

    def stats(self) -> SchedulerStats:
        with self._lock:
            return SchedulerStats(
                alive=self._thread.is_alive() and not self._closing,
                waiting=len(self._waiting),
                active_rows=len(self._running_tickets()),
                max_batch=self.max_batch,
                max_queue=self.max_queue,
                step_seconds=self._step_seconds,
                **self._counts,
            )

    def complete(self, requests: Iterable[GenerationRequest]) -> list[Ticket]:
        """Submit `requests` together (they share batches), wait for all and return their
        tickets; RuntimeError with the first failure's message if any failed."""
        tickets = [self.submit(request) for request in requests]
        for ticket in tickets:
            ticket.wait()
        failed = [t.error for t in tickets if t.finish == "error"]
        if failed:
            raise RuntimeError(f"Generation failed: {failed[0]}")
        return tickets

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the thread after its current forward pass; requests still waiting or running
        end with finish "error". Idempotent."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _check_steering(self, request: GenerationRequest) -> None:
        # Checked here so a bad request is refused to its caller, not failed mid-batch
        # together with everyone it would have shared a forward pass with.
        parts = [request.steering]
        if request.conditions is not None:
            for condition, deltas in request.conditions.dimensions.values():
                if not 0 <= condition.layer < self.loaded.num_layers:
                    raise ValueError(f"A condition reads layer {condition.layer}; the model has {self.loaded.num_layers} layers")
                parts.append(deltas)
        for layer, delta in (item for part in parts for item in part.items()):
            if not 0 <= layer < self.loaded.num_layers:
                raise ValueError(f"Steering names layer {layer}; the model has {self.loaded.num_layers} layers")
            if tuple(delta.shape) != (self.loaded.hidden_size,):
                raise ValueError(
                    f"Steering for layer {layer} has shape {tuple(delta.shape)}; the model needs "
                    f"({self.loaded.hidden_size},)"
                )

    def _active(self) -> Iterable[Ticket]:
        return itertools.chain(self._waiting, self._running_tickets())

    def _retry_after(self) -> int:
        """Seconds until a slot is likely to free: the fewest tokens a running request still
        may generate, at the recent decode speed."""
        left = [t.request.params.max_new_tokens - t.tokens for t in self._running_tickets()]
        estimate = min(left, default=1) * self._step_seconds
        return max(1, math.ceil(estimate))
