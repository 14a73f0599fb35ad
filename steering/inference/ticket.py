"""`Ticket`: one submitted generation, as its caller sees it.

The scheduler's thread pushes the request's `TokenEvent`s into the ticket; the caller reads
them in order, from a thread (`for event in ticket`, `ticket.get(timeout)`) or from asyncio
(`async for event in ticket`, `await ticket.next()`) without blocking the event loop: a
waiting coroutine parks on a future of its own loop, which the scheduler's thread completes
through `loop.call_soon_threadsafe`. Events are kept, so a reader that starts late misses
nothing; there is one read position, shared by all of a ticket's readers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable, Hashable

from steering.engine import GenerationRequest, TokenEvent


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
        for loop, waker in wakers:
            try:
                loop.call_soon_threadsafe(_wake, waker)
            except RuntimeError:
                pass  # that loop is closed: nobody is waiting there any more

    def _readable(self) -> bool:
        return self._read < len(self._events) or self.finish is not None

    def _take(self) -> TokenEvent | None:
        if self._read == len(self._events):
            return None
        self._read += 1
        return self._events[self._read - 1]


def _wake(waker: asyncio.Future) -> None:
    if not waker.done():  # a reader that was itself cancelled leaves a cancelled future
        waker.set_result(None)
