"""`Scheduler`: one model, one background thread, requests batched as they come.

`submit` never blocks: it queues the request and hands back a `Ticket`, or refuses at once
(`Busy` when waiting + running requests fill the queue, `TooManyForUser` when that user
already has `max_per_user` generations going). The thread runs the decode loop: before each
decode step it prefills the requests that have arrived, together, as a `DecodeBatch` of their
own and merges them into the running batch (`DecodeBatch.merge`), up to `max_batch` rows, so a
newcomer waits for one forward pass, not for the others to end. Each row streams its own
events into its ticket and leaves the batch when it ends or is cancelled.

With `prefill_chunk`, newcomers that arrive while rows are streaming prefill at most that many
tokens per forward pass, one decode step of the running batch between two passes, so a long
prompt delays the running streams' next token by one chunk, not by the whole prompt. A pass
takes whole prompts in order of arrival, as many as fit the budget; only a prompt longer than
the budget is cut, and it goes alone. The others wait for the next pass, one decode step later,
rather than share the budget: shared, every newcomer's prompt was cut into several passes and
each newcomer waited for all of them (and whoever arrived meanwhile for those too), which is
what kept staggered arrivals' first token at 8× a solo one (issue 25). While a prompt longer
than the budget is being prefilled in chunks, newcomers whose whole prompts fit one pass
overtake it: they prefill whole, in a pass of their own taken instead of its next chunk (in
order of arrival, as many as fit the budget), and join the running batch, so a short prompt's
first token waits for one chunk of the long one, not for all of them (issue 25). At most one
such pass comes between two of its chunks, so however many short prompts keep coming, the long
one still gets every other pass. A newcomer too long for a pass waits for the chunked prefill
to end: each turn of the loop has one prefill pass, and two chunked prefills would take turns
with each other, both first tokens later than one after the other. Newcomers that
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

import logging
import time
from typing import Hashable

from steering.engine import DecodeBatch, GenerationRequest, LoadedModel, SteeringHooks, TokenEvent

from .admission import Admission, Ticket

log = logging.getLogger(__name__)


def _prompt_tokens(ticket: Ticket) -> int:
    """The columns a request's prefill takes: its prompt and any answer resumed after it."""
    return ticket.request.prompt_tokens + len(ticket.request.generated_ids)


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
        self._overtaken = False  # whether a pass overtook `_prefill` since its last chunk (same)
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
        room = self.max_batch - sum(len(batch.rows) for batch in (running, self._prefill) if batch is not None)
        if self._prefill is not None:
            return self._overtakers(room), True

        def burst(ticket: Ticket) -> bool:  # arrived while no row was streaming
            return running is None or ticket.submitted_at <= self._streaming_since

        # The waiting line is in order of arrival, so a burst's requests come first; they go in
        # alone, whole, and those that came after the streams began follow within the budget.
        whole = bool(self._waiting) and burst(self._waiting[0])
        newcomers, width = [], 0
        while self._waiting and len(newcomers) < room and burst(self._waiting[0]) == whole:
            ticket = self._waiting[0]
            # Whole prompts, in order of arrival, as many as fit one pass of `prefill_chunk`
            # tokens (rows × the longest, padding included); the first always goes in (chunked,
            # alone, if longer than that). Splitting the budget over every waiting prompt
            # instead made each of them wait for several passes, with a decode step after each.
            width = max(width, _prompt_tokens(ticket))
            if newcomers and not whole and not self._fits_one_pass(len(newcomers) + 1, width):
                break
            newcomers.append(self._waiting.popleft())
        self._now_running(newcomers)
        return newcomers, whole

    def _overtakers(self, room: int) -> list[Ticket]:
        """Move the waiting requests that prefill whole before the next chunk of `_prefill`
        into the running set (under the lock): short prompts, in order of arrival, as many as
        fit one pass; none if a pass overtook it since its last chunk."""
        if self._overtaken:
            return []  # its turn: it moves on by one chunk between two overtaking passes
        newcomers, width = [], 0
        for ticket in self._waiting:
            if len(newcomers) >= room:
                break
            tokens = _prompt_tokens(ticket)
            if tokens > self.prefill_chunk:
                continue  # chunked too, it waits for `_prefill` to end
            width = max(width, tokens)
            if not self._fits_one_pass(len(newcomers) + 1, width):
                break  # the next short prompt waits for the next such pass: none overtakes another
            newcomers.append(ticket)
        for ticket in newcomers:
            self._waiting.remove(ticket)
        self._now_running(newcomers)
        self._overtaken = bool(newcomers)
        return newcomers

    def _fits_one_pass(self, rows: int, width: int) -> bool:
        """Whether `rows` prompts, padded to `width` tokens, fit one prefill pass."""
        return self.prefill_chunk is None or rows * width <= self.prefill_chunk

    def _now_running(self, tickets: list[Ticket]) -> None:
        """Count `tickets`, taken off the waiting line, as running (under the lock)."""
        for ticket in tickets:
            self._running[ticket.key] = ticket

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
        """One prefill pass of the newcomers' `batch`; after its last, they join. Until then
        it is `_prefill`; a pass that overtakes it leaves it there."""
        if batch is self._prefill:
            self._prefill = None  # again below while chunks are left
        try:
            events = batch.step()
        except Exception as exc:
            self._fail([self._running[key] for key in batch.keys], exc)  # the running batch was not part of this pass
            return
        ended = time.monotonic()  # before anyone sees these first tokens
        self._publish(events)
        if batch.prefilling and not batch.done:
            self._prefill, self._overtaken = batch, False
            return
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
