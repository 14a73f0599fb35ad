"""`Scheduler`: one model, one background thread, requests batched as they come.

`submit` never blocks: it queues the request and hands back a `Ticket`, or refuses at once
(`Busy` when waiting + running requests fill the queue, `TooManyForUser` when that user
already has `max_per_user` generations going). The thread runs the decode loop: before each
decode step it prefills the requests that have arrived, together, as a `DecodeBatch` of their
own and merges them into the running batch (`DecodeBatch.merge`), up to `max_batch` rows, so a
newcomer waits for one forward pass, not for the others to end. Each row streams its own
events into its ticket and leaves the batch when it ends or is cancelled.

With `prefill_chunk`, newcomers that arrive while rows are streaming prefill that many tokens
per forward pass, one decode step of the running batch between two passes, so a long prompt
delays the running streams' next token by one chunk, not by the whole prompt. Newcomers that
arrived while no row was streaming yet (nothing ran, or the rows now running were still in
their first prefill: a burst of simultaneous arrivals, which cannot all make the first pass)
prefill whole, as one batch: chunking them would make every one of them wait for the others'
decode steps, for the sake of rows that have had a single token. That keeps a burst's time to
first token near the time to prefill its prompts together, the limit on a CPU.

When the model's cache cannot merge (`DecodeBatch.joinable` is false: static, quantised or
hybrid caches) newcomers wait until the running batch has ended, then start the next one.

An exception in a forward pass ends the requests of that pass with finish "error" and its
message (fault "server"); the thread carries on with the next requests. A row whose own
logits stop being finite ends alone (fault "request"), the rest of its pass goes on. `close()` stops the thread and ends
every request still there the same way.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Hashable, Iterable

from steering.engine import DecodeBatch, GenerationRequest, LoadedModel, SteeringHooks, TokenEvent

from .ticket import Ticket

log = logging.getLogger(__name__)


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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

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


class Scheduler(Admission):
    """Batched generation on `loaded` from one background thread; see the module docstring.

    `hooks` are the steering hooks of the model (made here when not given); the scheduler
    hooks further layers itself, between two forward passes, when a request steers them.
    `max_batch` rows decode together; `max_queue` bounds waiting + running requests;
    `max_per_user` bounds one user's (None: no bound; requests without a user are not
    counted); `prefill_chunk` (tokens, None: whole prompts) bounds a newcomers' prefill pass
    while others decode."""

    def __init__(
        self,
        loaded: LoadedModel,
        hooks: SteeringHooks | None = None,
        *,
        max_batch: int = 8,
        max_queue: int = 32,
        max_per_user: int | None = 2,
        prefill_chunk: int | None = None,
        name: str = "steerlab-inference",
    ) -> None:
        self._admission_init(max_batch=max_batch, max_queue=max_queue, max_per_user=max_per_user)
        if prefill_chunk is not None and prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1 token (None: whole prompts)")
        self.prefill_chunk = prefill_chunk
        self.loaded = loaded
        self.hooks = hooks if hooks is not None else SteeringHooks(loaded.layers)
        self._running: dict[int, Ticket] = {}  # key → ticket, for the rows of `_batch`
        self._batch: DecodeBatch | None = None  # touched by the scheduler's thread only
        self._prefill: DecodeBatch | None = None  # newcomers between two prefill chunks (same)
        # When `_batch`'s first rows got their first token (time.monotonic(); same thread):
        # requests submitted before it arrived while no row was streaming.
        self._streaming_since = 0.0
        self._start_thread(name)

    # -- the callers' side -----------------------------------------------------------------

    def submit(self, request: GenerationRequest, *, user: Hashable | None = None) -> Ticket:
        """Queue `request` and return its ticket at once. Raises ValueError for steering
        this model cannot take, Busy, TooManyForUser, or SchedulerClosed."""
        return self._enqueue(request, user, self._cancel_waiting)

    def _running_tickets(self) -> list[Ticket]:
        return list(self._running.values())

    def _cancel_waiting(self, ticket: Ticket) -> None:
        with self._lock:
            try:
                self._waiting.remove(ticket)
            except ValueError:
                return  # running (its batch drops it at the next step) or already finished
        ticket.push(TokenEvent(ticket.key, "", None, "cancelled"))

    # -- the scheduler's thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._closing and not self._waiting and self._batch is None and self._prefill is None:
                        self._lock.wait()
                    if self._closing:
                        return
                    newcomers, whole = self._admit()
                if newcomers:
                    self._start(newcomers, whole=whole)
                elif self._prefill is not None:
                    self._prefill_step(self._prefill)
                if self._batch is not None:
                    self._decode()
        except Exception:  # a bug here, not in a request: log it, then refuse new requests
            log.exception("The inference scheduler's thread died")
        finally:
            self._shut_down()

    def _admit(self) -> tuple[list[Ticket], bool]:
        """Move the waiting requests that fit into the running set (under the lock), and say
        whether they prefill whole (True) or in chunks between the running rows' steps."""
        running = self._batch
        if running is not None and not running.joinable:
            return [], True  # this cache cannot take newcomers: they start with the next batch
        if self._prefill is not None:
            return [], True  # one prefill at a time: the next newcomers go in after this one's last chunk
        room = self.max_batch - (len(running.rows) if running is not None else 0)

        def burst(ticket: Ticket) -> bool:  # arrived while no row was streaming
            return running is None or ticket.submitted_at <= self._streaming_since

        # The waiting line is in order of arrival, so a burst's requests come first; they go in
        # alone, whole, and those that came after the streams began follow in chunks.
        whole = bool(self._waiting) and burst(self._waiting[0])
        newcomers = []
        while self._waiting and len(newcomers) < room and burst(self._waiting[0]) == whole:
            ticket = self._waiting.popleft()
            self._running[ticket.key] = ticket
            newcomers.append(ticket)
        return newcomers, whole

    def _start(self, newcomers: list[Ticket], *, whole: bool) -> None:
        """Prefill the newcomers together (whole, or in chunks while others stream: see the
        module docstring), then merge them into the running batch."""
        try:
            self.hooks.attach(sorted({layer for t in newcomers for layer in t.request.steering}))
            batch = DecodeBatch(
                self.loaded,
                self.hooks,
                [t.request for t in newcomers],
                keys=[t.key for t in newcomers],
                prefill_chunk=None if whole else self.prefill_chunk,
            )
        except Exception as exc:
            self._fail(newcomers, exc)
            return
        self._prefill_step(batch)

    def _prefill_step(self, batch: DecodeBatch) -> None:
        """One prefill pass of the newcomers' `batch`; after its last, they join."""
        try:
            events = batch.step()
        except Exception as exc:
            self._prefill = None
            self._fail([self._running[key] for key in batch.keys], exc)  # the running batch was not part of this pass
            return
        ended = time.monotonic()  # before anyone sees these first tokens
        self._publish(events)
        if batch.prefilling and not batch.done:
            self._prefill = batch
            return
        self._prefill = None
        self._counts["prefills"] += 1
        if batch.done:
            return
        if self._batch is None:
            self._batch = batch
            self._streaming_since = ended
            return
        try:
            self._batch.merge(batch)
        except Exception as exc:  # merge changes nothing when it fails: the running rows go on
            self._fail([self._running[key] for key in batch.keys], exc)
            return
        self._counts["joins"] += 1

    def _decode(self) -> None:
        batch = self._batch
        started = time.perf_counter()
        try:
            events = batch.step()
        except Exception as exc:
            self._batch = None  # its cache may be half-updated: drop it with its rows
            self._fail([self._running[key] for key in batch.keys], exc)
            return
        elapsed = time.perf_counter() - started
        self._counts["steps"] += 1
        # A running mean that follows changes of load within a few dozen steps.
        self._step_seconds = elapsed if self._counts["steps"] == 1 else 0.9 * self._step_seconds + 0.1 * elapsed
        if batch.done:
            self._batch = None
        self._publish(events)

    def _publish(self, events: list[TokenEvent]) -> None:
        # A finished request leaves the running set before its last event is delivered, so a
        # caller that sees the end can submit again at once.
        with self._lock:
            tickets = [self._running[event.index] for event in events]
            for event in events:
                if event.finish is not None:
                    del self._running[event.index]
            self._counts["tokens_total"] += sum(event.token_id is not None for event in events)
        for ticket, event in zip(tickets, events):
            ticket.push(event)

    def _fail(self, tickets: list[Ticket], exc: BaseException) -> None:
        log.error("Generation failed for requests %s", [t.key for t in tickets], exc_info=exc)
        with self._lock:
            self._counts["errors"] += len(tickets)
        self._end(tickets, f"Generation failed: {type(exc).__name__}: {exc}")

    def _end(self, tickets: list[Ticket], message: str) -> None:
        with self._lock:
            for ticket in tickets:
                self._running.pop(ticket.key, None)
        for ticket in tickets:
            ticket.push(TokenEvent(ticket.key, "", None, "error", error=message, fault="server"))

    def _shut_down(self) -> None:
        with self._lock:
            self._closing = True
            left = [*self._waiting, *self._running.values()]
            self._waiting.clear()
        self._batch = self._prefill = None
        self._end(left, "The inference service shut down before this generation ended")
