"""The scheduler on tiny models: requests join running batches and each gets exactly its
solo text; cancel, Busy, per-user limits, errors, asyncio readers, close.

Nothing here depends on timing: a `Gate` on the model holds the scheduler's thread before
each forward pass until the test lets it through, so the test decides what the thread has
done when it submits the next request. Waits have generous timeouts, only to fail instead of
hanging."""

import asyncio
import threading

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from steering.engine import GenerationParams, GenerationRequest, LoadedModel, SteeringHooks, stream_batch
from steering.inference import Busy, Scheduler, SchedulerClosed, TooManyForUser

from tests.tiny_models import CORE_FAMILIES, build_tiny, make_tokenizer

TIMEOUT = 60


class Gate:
    """A forward pre-hook on one layer that, once `hold()` is called, lets a forward pass
    through only for each permit that `allow` gives, until `open()`."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self._permits = threading.Semaphore(0)
        self._held = False
        self._handle = layer.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self._held and not self._permits.acquire(timeout=TIMEOUT):
            raise RuntimeError("The test held the gate too long")

    def hold(self) -> None:
        while self._permits.acquire(blocking=False):
            pass
        self._held = True

    def allow(self, passes: int) -> None:
        for _ in range(passes):
            self._permits.release()

    def open(self) -> None:
        self._held = False
        self._permits.release()  # wakes a pass already waiting

    def remove(self) -> None:
        self.open()
        self._handle.remove()


class Boom:
    """A forward hook that raises while armed: in every pass, or in prefill passes only."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.armed: str | None = None  # None, "always" or "prefill"
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self.armed == "always" or (self.armed == "prefill" and hidden.shape[1] > 1):
            raise RuntimeError("boom in the model")

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def loaded():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()  # every request runs to its own max_new_tokens
    return loaded


@pytest.fixture
def hooks(loaded):
    return SteeringHooks(loaded.layers, [1, 2])


@pytest.fixture
def gate(loaded):
    gate = Gate(loaded.layers[0])
    yield gate
    gate.remove()


@pytest.fixture
def make_scheduler(loaded, hooks, gate):
    made = []

    def make(**options) -> Scheduler:
        options.setdefault("max_per_user", None)
        scheduler = Scheduler(loaded, hooks, **options)
        made.append(scheduler)
        return scheduler

    yield make
    gate.open()
    for scheduler in made:
        scheduler.close()


def _delta(loaded, seed, layers=(1, 2), scale=6.0):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64) for layer in layers}


def _request(loaded, prompt="hello world", max_new_tokens=8, steering=None):
    return GenerationRequest(
        prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=max_new_tokens), steering=steering or {}
    )


def _alone(loaded, hooks, request) -> str:
    return "".join(event.text for event in stream_batch(loaded, hooks, [request]))


def _drain(ticket) -> list:
    events = []
    while (event := ticket.get(timeout=TIMEOUT)) is not None:
        events.append(event)
    return events


def _take(ticket, count: int) -> list:
    return [ticket.get(timeout=TIMEOUT) for _ in range(count)]


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_it_gives_each_request_that_joins_a_running_batch_exactly_its_solo_text(family):
    loaded = build_tiny(family)
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers)  # the scheduler hooks the layers requests steer
    specs = [
        ("hello world", 14, _delta(loaded, 1)),
        ("wanna grab coffee later", 6, {}),
        ("please find attached the documents you requested yesterday", 9, _delta(loaded, 2, layers=(2, 3))),
        ("yeah", 11, _delta(loaded, 3, layers=(0,))),
    ]
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_batch=4, max_per_user=None)
    try:
        gate.hold()
        first = scheduler.submit(_request(loaded, *specs[0]))
        gate.allow(3)  # its prefill and two decode steps
        taken = _take(first, 3)
        assert [event.index for event in taken] == [first.key] * 3
        later = [scheduler.submit(_request(loaded, *spec)) for spec in specs[1:]]
        gate.open()
        for ticket in [first, *later]:
            assert ticket.wait(TIMEOUT)
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.joins == 1 and stats.prefills == 2
    assert [ticket.text for ticket in [first, *later]] == [_alone(loaded, hooks, _request(loaded, *s)) for s in specs]
    assert [(t.finish, t.tokens) for t in [first, *later]] == [("length", n) for _, n, _ in specs]
    assert "".join(event.text for event in [*taken, *_drain(first)]) == first.text
    assert stats.tokens_total == sum(n for _, n, _ in specs)
    assert stats.waiting == stats.active_rows == 0
    assert all(ticket.time_to_first_token is not None and ticket.latency >= ticket.time_to_first_token for ticket in later)


def _tiny_hybrid() -> LoadedModel:
    """A tiny LFM2: its convolution layers keep state in a hybrid cache that cannot merge."""
    if not hasattr(transformers, "Lfm2Config"):
        pytest.skip("this transformers has no LFM2")
    tokenizer = make_tokenizer()
    config = transformers.Lfm2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        layer_types=["conv", "full_attention", "conv", "full_attention"],
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float64).eval()
    loaded = LoadedModel(model=model, tokenizer=tokenizer, model_id="tiny-lfm2")
    loaded.stop_ids = frozenset()
    return loaded


def test_on_a_cache_that_cannot_merge_newcomers_wait_for_the_next_batch():
    loaded = _tiny_hybrid()
    hooks = SteeringHooks(loaded.layers, [1])
    specs = [("hello world", 6, _delta(loaded, 7, layers=(1,))), ("yeah", 4, {})]
    expected = [_alone(loaded, hooks, _request(loaded, *spec)) for spec in specs]
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None)
    try:
        gate.hold()
        first = scheduler.submit(_request(loaded, *specs[0]))
        gate.allow(2)
        _take(first, 2)
        second = scheduler.submit(_request(loaded, *specs[1]))
        gate.open()
        assert first.wait(TIMEOUT) and second.wait(TIMEOUT)
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.joins == 0 and stats.prefills == 2
    assert second.first_token_at >= first.finished_at
    assert [first.text, second.text] == expected


def test_newcomers_beyond_max_batch_wait_for_a_free_row(loaded, hooks, gate, make_scheduler):
    scheduler = make_scheduler(max_batch=2, max_queue=8)
    specs = [("hello world", 5), ("yeah", 9), ("hey", 4), ("wanna grab coffee", 7), ("the report", 3)]
    tickets = [scheduler.submit(_request(loaded, prompt, n)) for prompt, n in specs]
    for ticket in tickets:
        assert ticket.wait(TIMEOUT)
    assert [t.text for t in tickets] == [_alone(loaded, hooks, _request(loaded, p, n)) for p, n in specs]
    assert scheduler.stats().active_rows == 0


def test_a_cancelled_request_frees_its_slot_within_one_step(loaded, gate, make_scheduler):
    scheduler = make_scheduler(max_batch=2, max_queue=2)
    gate.hold()
    long = scheduler.submit(_request(loaded, max_new_tokens=200))
    cancelled = scheduler.submit(_request(loaded, "yeah", max_new_tokens=200))
    with pytest.raises(Busy):
        scheduler.submit(_request(loaded))
    cancelled.cancel()
    gate.allow(1)  # whichever pass the thread is in, waiting or running, one is enough
    events = _drain(cancelled)
    assert events[-1].finish == "cancelled" and cancelled.finish == "cancelled"
    third = scheduler.submit(_request(loaded, "hey", max_new_tokens=3))
    assert not long.done
    long.cancel()
    gate.open()
    assert third.wait(TIMEOUT) and third.finish == "length"
    assert long.wait(TIMEOUT) and long.finish == "cancelled" and long.tokens < 200


def test_a_request_cancelled_while_waiting_ends_at_once(loaded, gate, make_scheduler):
    scheduler = make_scheduler(max_batch=1, max_queue=4)
    gate.hold()
    running = scheduler.submit(_request(loaded, max_new_tokens=50))
    waiting = scheduler.submit(_request(loaded, "yeah"))
    waiting.cancel()  # the gate lets no pass through: only the cancel itself can end it
    assert waiting.wait(TIMEOUT) and waiting.finish == "cancelled" and waiting.tokens == 0
    stats = scheduler.stats()
    assert stats.waiting + stats.active_rows == 1  # only the first is left
    running.cancel()


def test_it_answers_busy_when_the_queue_is_full_with_a_hint_when_to_retry(loaded, gate, make_scheduler):
    scheduler = make_scheduler(max_batch=1, max_queue=3)
    gate.hold()
    tickets = [scheduler.submit(_request(loaded, max_new_tokens=20)) for _ in range(3)]
    with pytest.raises(Busy, match="busy with 3 requests") as refused:
        scheduler.submit(_request(loaded))
    assert isinstance(refused.value.retry_after, int) and refused.value.retry_after >= 1
    stats = scheduler.stats()
    assert stats.waiting + stats.active_rows == 3
    for ticket in tickets:
        ticket.cancel()


def test_it_limits_the_generations_of_one_user(loaded, gate, make_scheduler):
    scheduler = make_scheduler(max_per_user=2)
    gate.hold()
    alices = [scheduler.submit(_request(loaded, max_new_tokens=30), user="alice") for _ in range(2)]
    with pytest.raises(TooManyForUser, match="at most 2"):
        scheduler.submit(_request(loaded), user="alice")
    bobs = scheduler.submit(_request(loaded, max_new_tokens=30), user="bob")
    anonymous = [scheduler.submit(_request(loaded, max_new_tokens=30)) for _ in range(3)]
    alices[0].cancel()
    gate.allow(1)
    assert alices[0].wait(TIMEOUT)
    again = scheduler.submit(_request(loaded, max_new_tokens=2), user="alice")
    for ticket in [alices[1], bobs, again, *anonymous]:
        ticket.cancel()


def test_it_refuses_steering_the_model_cannot_take(loaded, make_scheduler):
    scheduler = make_scheduler()
    with pytest.raises(ValueError, match=r"shape \(65,\)"):
        scheduler.submit(_request(loaded, steering={1: torch.zeros(loaded.hidden_size + 1)}))
    with pytest.raises(ValueError, match="layer 9"):
        scheduler.submit(_request(loaded, steering={9: torch.zeros(loaded.hidden_size)}))
    assert scheduler.stats().requests_total == 0


def test_an_error_in_a_step_ends_the_requests_of_that_step_and_the_scheduler_goes_on(loaded, hooks, gate, make_scheduler):
    boom = Boom(loaded.layers[1])
    try:
        scheduler = make_scheduler()
        gate.hold()
        victims = [scheduler.submit(_request(loaded, p, 20)) for p in ("hello world", "yeah")]
        gate.allow(3)  # whether the second joined the first or not, both are in the batch after 2 tokens
        _take(victims[0], 2)
        boom.armed = "always"
        gate.allow(1)
        for ticket in victims:
            assert ticket.wait(TIMEOUT)
            assert ticket.finish == "error" and "boom in the model" in ticket.error and ticket.fault == "server"
            assert _drain(ticket)[-1].error == ticket.error
        boom.armed = None
        gate.open()
        later = scheduler.submit(_request(loaded, "hey", 6, _delta(loaded, 1)))
        assert later.wait(TIMEOUT) and later.finish == "length"
        stats = scheduler.stats()
        assert stats.errors == 2 and stats.alive
    finally:
        boom.remove()
    assert later.text == _alone(loaded, hooks, _request(loaded, "hey", 6, _delta(loaded, 1)))


def test_a_row_with_absurd_steering_ends_alone_whether_it_starts_or_joins_a_batch(loaded, hooks, gate, make_scheduler):
    inf = {layer: torch.full((loaded.hidden_size,), float("inf")) for layer in (1, 2)}
    scheduler = make_scheduler()
    gate.hold()
    running = scheduler.submit(_request(loaded, "hello world", 12, _delta(loaded, 4)))
    first_poison = scheduler.submit(_request(loaded, "me first", 6, inf))
    gate.allow(3)
    _take(running, 2)
    joining = [scheduler.submit(_request(loaded, p, 6, s)) for p, s in (("yeah", None), ("no way", inf))]
    gate.open()
    for ticket in (first_poison, joining[1]):
        assert ticket.wait(TIMEOUT) and ticket.finish == "error"
        assert ticket.fault == "request" and "not finite" in ticket.error
    assert running.wait(TIMEOUT) and running.finish == "length" and running.fault is None
    assert joining[0].wait(TIMEOUT) and joining[0].finish == "length"
    assert running.text == _alone(loaded, hooks, _request(loaded, "hello world", 12, _delta(loaded, 4)))
    assert joining[0].text == _alone(loaded, hooks, _request(loaded, "yeah", 6))
    assert scheduler.stats().alive


def test_a_failed_prefill_ends_only_the_newcomers(loaded, hooks, gate, make_scheduler):
    boom = Boom(loaded.layers[2])
    try:
        scheduler = make_scheduler()
        gate.hold()
        running = scheduler.submit(_request(loaded, "hello world", 12, _delta(loaded, 4)))
        gate.allow(2)
        _take(running, 2)
        boom.armed = "prefill"
        newcomer = scheduler.submit(_request(loaded, "yeah", 5))
        gate.open()
        assert newcomer.wait(TIMEOUT) and newcomer.finish == "error"
        assert running.wait(TIMEOUT) and running.finish == "length"
    finally:
        boom.remove()
    assert running.text == _alone(loaded, hooks, _request(loaded, "hello world", 12, _delta(loaded, 4)))


async def test_asyncio_callers_read_events_without_blocking_the_event_loop(loaded, hooks, gate, make_scheduler):
    scheduler = make_scheduler()
    specs = [("hello world", 7, _delta(loaded, 5)), ("yeah", 5, {}), ("hey", 9, _delta(loaded, 6))]
    expected = [_alone(loaded, hooks, _request(loaded, *spec)) for spec in specs]
    gate.hold()
    tickets = [scheduler.submit(_request(loaded, *spec)) for spec in specs]

    async def read(ticket) -> str:
        return "".join([event.text async for event in ticket])

    readers = asyncio.gather(*(read(ticket) for ticket in tickets))
    await asyncio.sleep(0.05)  # the loop runs while the readers wait on a held scheduler
    assert not readers.done()
    gate.open()
    assert await asyncio.wait_for(readers, TIMEOUT) == expected
    assert await tickets[0].next() is None  # read to the end


async def test_an_asyncio_reader_can_be_cancelled_and_another_read_on(loaded, gate, make_scheduler):
    scheduler = make_scheduler()
    gate.hold()
    ticket = scheduler.submit(_request(loaded, max_new_tokens=4))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ticket.next(), 0.05)
    gate.open()
    events = [event async for event in ticket]
    assert len(events) == 4 and events[-1].finish == "length"


async def _wait_until(condition, what: str) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_batches_read_the_first_token_at_once_then_once_per_interval_and_the_end_at_once(
    loaded, hooks, gate, make_scheduler
):
    scheduler = make_scheduler()
    expected = _alone(loaded, hooks, _request(loaded, max_new_tokens=12))
    gate.hold()
    ticket = scheduler.submit(_request(loaded, max_new_tokens=12))
    batches = []

    async def read() -> None:
        async for events in ticket.batches(30.0):  # far longer than the test: only the end may cut it short
            batches.append(events)

    reader = asyncio.ensure_future(read())
    gate.allow(1)  # the prefill: the first token
    await _wait_until(lambda: batches, "the first token")
    assert [len(events) for events in batches] == [1]
    gate.allow(5)  # five decode steps while the reader waits out its interval
    await _wait_until(lambda: ticket.tokens == 6, "six tokens")
    await asyncio.sleep(0.05)
    assert len(batches) == 1, "a token was read before the interval was out"
    gate.open()  # the rest, and the end: read at once, not 30 s later
    await asyncio.wait_for(reader, 10)
    assert [len(events) for events in batches] == [1, 11]
    assert batches[-1][-1].finish == "length"
    assert "".join(event.text for events in batches for event in events) == expected == ticket.text
    assert ticket._end_wakers == []  # nothing left behind for the scheduler to wake


async def test_batches_read_a_token_at_once_after_a_quiet_interval(loaded, gate, make_scheduler):
    scheduler = make_scheduler()
    gate.hold()
    ticket = scheduler.submit(_request(loaded, max_new_tokens=3))
    arrived = []

    async def read() -> None:
        async for events in ticket.batches(1.0):
            arrived.append((asyncio.get_running_loop().time(), len(events)))

    reader = asyncio.ensure_future(read())
    gate.allow(1)
    await _wait_until(lambda: arrived, "the first token")
    await asyncio.sleep(1.2)  # the interval is out and nothing came
    allowed = asyncio.get_running_loop().time()
    gate.allow(1)
    await _wait_until(lambda: len(arrived) == 2, "the second token")
    assert arrived[1][1] == 1 and arrived[1][0] - allowed < 0.8  # not a whole interval after it came
    gate.open()
    await asyncio.wait_for(reader, 10)
    assert sum(count for _, count in arrived) == 3


async def test_a_batch_reader_cancelled_in_its_interval_leaves_nothing_behind(loaded, gate, make_scheduler):
    scheduler = make_scheduler()
    gate.hold()
    ticket = scheduler.submit(_request(loaded, max_new_tokens=6))
    batches = ticket.batches(30.0)
    gate.allow(1)
    first = await asyncio.wait_for(batches.__anext__(), TIMEOUT)
    waiting = asyncio.ensure_future(batches.__anext__())
    await _wait_until(lambda: ticket._end_wakers, "the reader to wait out its interval")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ticket._end_wakers == []
    gate.open()
    assert ticket.wait(TIMEOUT)
    rest = [event async for event in ticket]  # another reader goes on from where the first stopped
    assert len(first) + len(rest) == 6 and rest[-1].finish == "length"


def test_close_ends_every_request_left_and_stops_the_thread(loaded, gate, make_scheduler):
    scheduler = make_scheduler(max_batch=1)
    gate.hold()
    running = scheduler.submit(_request(loaded, max_new_tokens=200))
    waiting = scheduler.submit(_request(loaded, "yeah"))
    scheduler.close(timeout=0)  # asks; the thread stops after the pass it is held in
    gate.open()
    scheduler.close()
    for ticket in (running, waiting):
        assert ticket.done and ticket.finish == "error" and "shut down" in ticket.error
    assert not scheduler.stats().alive
    with pytest.raises(SchedulerClosed):
        scheduler.submit(_request(loaded))
    scheduler.close()  # again: nothing happens
