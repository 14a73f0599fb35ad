"""What every scheduler shares with its callers, whichever engine decodes: `Admission` (the
queue of waiting tickets, the refusals, `stats`, `close`), the refusals themselves (`Busy`,
`TooManyForUser`, `SchedulerClosed`) and `SchedulerStats`. The builtin `Scheduler`
(scheduler.py) and vLLM's `VllmScheduler` (steering/vllm_inference/) both build on it, so a request
is admitted and refused the same way on both."""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Hashable, Iterable

from steering.engine import GenerationRequest, LoadedModel

from .ticket import Ticket


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
