"""The scheduler prefills newcomers in chunks between the running batch's decode steps: the
running stream keeps getting a token every other forward pass, short newcomers overtake a long
prompt's chunks, and everyone still gets exactly their solo text. The `Gate` of test_scheduler
lets the test count forward passes."""

import time

from steering.engine import SteeringHooks
from steering.inference import Scheduler

from tests.inference.test_scheduler import TIMEOUT, Boom, Gate, _alone, _delta, _request, _take
from tests.tiny_models import build_tiny

LONG = "please find attached the documents you requested yesterday, the quarterly report and the minutes"


def test_a_newcomers_prefill_is_chunked_between_the_running_streams_steps():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=2)
    running_spec, newcomer_spec = ("hello world", 40, _delta(loaded, 1)), (LONG, 5, _delta(loaded, 2))
    assert len(loaded.chat_ids(LONG)) > 2 * 6  # more chunks than the passes let through below
    try:
        gate.hold()
        running = scheduler.submit(_request(loaded, *running_spec))
        gate.allow(3)  # its prefill (whole: nothing else runs) and two decode steps
        _take(running, 3)
        newcomer = scheduler.submit(_request(loaded, *newcomer_spec))
        gate.allow(1 + 2 * 5)  # the decode step already waiting, then 5 × (a chunk, a decode step)
        _take(running, 6)
        assert newcomer.tokens == 0 and scheduler.stats().prefills == 1
        gate.open()
        assert running.wait(TIMEOUT) and newcomer.wait(TIMEOUT)
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.prefills == 2 and stats.joins == 1
    assert running.text == _alone(loaded, hooks, _request(loaded, *running_spec))
    assert newcomer.text == _alone(loaded, hooks, _request(loaded, *newcomer_spec))


def test_newcomers_that_find_nothing_running_prefill_in_one_pass():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, max_per_user=None, prefill_chunk=2)
    try:
        gate.hold()
        ticket = scheduler.submit(_request(loaded, LONG, 3))
        gate.allow(1)  # a single pass gives the first token
        assert len(_take(ticket, 1)) == 1
        gate.open()
        assert ticket.wait(TIMEOUT)
    finally:
        gate.remove()
        scheduler.close()


def _admitted(scheduler) -> None:
    """Wait until the scheduler's thread has taken every waiting request (and so is in, or
    about to be in, their prefill)."""
    deadline = time.monotonic() + TIMEOUT
    while scheduler.stats().waiting:
        assert time.monotonic() < deadline, "the scheduler never admitted the request"
        time.sleep(0.005)


def test_a_burst_prefills_whole_and_only_later_arrivals_are_chunked():
    # B and C arrive while A's prefill is under way (no row streams yet): they cannot make A's
    # pass, so they make the next one, whole and together. D arrives once rows stream: chunked.
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=2)
    specs = {
        "a": ("hello world", 30, _delta(loaded, 1)),
        "b": (LONG, 6, _delta(loaded, 2)),
        "c": (LONG + " and the budget", 6, None),
        "d": (LONG, 4, _delta(loaded, 3)),
    }
    assert len(loaded.chat_ids(LONG)) > 2 * 4  # chunked, B and C would need more passes than given
    try:
        gate.hold()
        a = scheduler.submit(_request(loaded, *specs["a"]))
        _admitted(scheduler)  # A's prefill waits at the gate
        b, c = (scheduler.submit(_request(loaded, *specs[k])) for k in "bc")
        gate.allow(2)  # A's prefill, then its first decode step (the same turn of the loop)
        _take(a, 2)
        gate.allow(1)  # B's and C's prefill: one pass, whole
        assert len(_take(b, 1)) == len(_take(c, 1)) == 1
        assert scheduler.stats().prefills == 2
        d = scheduler.submit(_request(loaded, *specs["d"]))
        gate.allow(1 + 2 * 3)  # the decode step already waiting, then 3 × (a chunk of D, a decode step)
        _take(a, 4)
        assert d.tokens == 0 and scheduler.stats().prefills == 2
        gate.open()
        assert all(t.wait(TIMEOUT) for t in (a, b, c, d))
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.prefills == 3 and stats.joins == 2
    for key, ticket in zip("abcd", (a, b, c, d)):
        assert ticket.text == _alone(loaded, hooks, _request(loaded, *specs[key])), key


def test_newcomers_prefill_whole_in_order_of_arrival_as_many_as_fit_the_budget():
    # B and C arrive together while A streams, and the budget holds one of their prompts, not
    # both: B prefills whole in one pass and has its first token at once; C follows, whole,
    # one decode step later. (Sharing the budget, both prompts were cut in chunks and each
    # waited for all of them.) Everyone gets their solo text.
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    specs = {
        "a": ("hello world", 30, _delta(loaded, 1)),
        "b": ("wanna grab coffee later", 6, _delta(loaded, 2)),
        "c": ("see you at the station tomorrow", 6, None),
    }
    width = max(len(loaded.chat_ids(specs[k][0])) for k in "bc")
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=width + 1)
    try:
        gate.hold()
        a = scheduler.submit(_request(loaded, *specs["a"]))
        gate.allow(3)  # A's prefill and two decode steps; the third waits at the gate
        _take(a, 3)
        b, c = (scheduler.submit(_request(loaded, *specs[k])) for k in "bc")
        gate.allow(2)  # the decode step already waiting, then one pass: B's whole prompt
        assert b.get(timeout=TIMEOUT).token_id is not None
        assert c.tokens == 0
        gate.allow(2)  # a decode step of A and B, then C's whole prompt
        assert c.get(timeout=TIMEOUT).token_id is not None
        gate.open()
        assert all(t.wait(TIMEOUT) for t in (a, b, c))
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.prefills == 3 and stats.joins == 2
    for key, ticket in zip("abc", (a, b, c)):
        assert ticket.text == _alone(loaded, hooks, _request(loaded, *specs[key])), key


def _long_prompt_chunking(loaded, scheduler, gate, spec):
    """Start A streaming, then admit the long prompt L: on return the thread is in L's first
    chunk (pass 3, held at the gate) or before it, and A has had two tokens."""
    gate.hold()
    a = scheduler.submit(_request(loaded, "hello world", 30, _delta(loaded, 1)))
    gate.allow(1)  # A's prefill, whole; its first decode step (the same turn) waits at the gate
    _take(a, 1)
    long = scheduler.submit(_request(loaded, *spec))
    gate.allow(1)  # that decode step; the next turn admits L, chunked: nothing else waits
    _take(a, 1)
    _admitted(scheduler)
    return a, long


def test_a_short_newcomer_overtakes_a_long_prompt_being_prefilled_in_chunks():
    # L needs five passes; S, arriving during the first, prefills whole in the next pass
    # instead of L's second chunk, and has its first token long before L. (Main let one
    # prefill run at a time: S waited for all five.)
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=8)
    long_spec, short_spec = (LONG, 5, _delta(loaded, 2)), ("yeah", 6, _delta(loaded, 3))
    assert len(loaded.chat_ids(LONG)) > 8 * 4 and len(loaded.chat_ids("yeah")) <= 8
    try:
        a, long = _long_prompt_chunking(loaded, scheduler, gate, long_spec)
        short = scheduler.submit(_request(loaded, *short_spec))
        gate.allow(4)  # L's first chunk, a decode step, S's whole prompt, a decode step of A and S
        _take(a, 2)
        assert short.tokens > 0 and long.tokens == 0
        assert scheduler.stats().prefills == 2  # A's and S's: L is still in its chunks
        gate.open()
        assert all(t.wait(TIMEOUT) for t in (a, long, short))
        stats = scheduler.stats()
    finally:
        gate.remove()
        scheduler.close()
    assert stats.prefills == 3 and stats.joins == 2
    assert long.text == _alone(loaded, hooks, _request(loaded, *long_spec))
    assert short.text == _alone(loaded, hooks, _request(loaded, *short_spec))


def test_short_newcomers_overtake_one_pass_at_a_time_in_order_of_arrival():
    # L needs three passes of 14 tokens; S1, S2 and S3 arrive together during the first and
    # fit a pass one at a time. They overtake L in turn, one pass between two of its chunks:
    # S1, L's second chunk, S2, L's last chunk (its first token), then S3. Short prompts that
    # keep coming slow L down but do not starve it.
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    gate = Gate(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=14)
    long_spec = (LONG, 4, _delta(loaded, 2))
    specs = [
        ("wanna grab coffee later", 5, _delta(loaded, 3)),
        ("good night", 5, None),
        ("ok thanks", 5, _delta(loaded, 4)),
    ]
    widths = [len(loaded.chat_ids(prompt)) for prompt, _, _ in specs]
    assert 2 * 14 < len(loaded.chat_ids(LONG)) <= 3 * 14 and max(widths) <= 14 < 2 * min(widths)
    try:
        a, long = _long_prompt_chunking(loaded, scheduler, gate, long_spec)
        shorts = [scheduler.submit(_request(loaded, *spec)) for spec in specs]
        first_tokens = []  # who has had a token, after each turn: one prefill pass, a decode step
        for _ in range(5):
            gate.allow(2)
            _take(a, 1)
            first_tokens.append([t.tokens > 0 for t in (long, *shorts)])
        gate.open()
        assert all(t.wait(TIMEOUT) for t in (a, long, *shorts))
    finally:
        gate.remove()
        scheduler.close()
    assert first_tokens == [
        [False, False, False, False],  # L's first chunk
        [False, True, False, False],  # S1
        [False, True, False, False],  # L's second chunk
        [False, True, True, False],  # S2
        [True, True, True, False],  # L's last chunk: L has its first token before S3
    ]
    assert long.text == _alone(loaded, hooks, _request(loaded, *long_spec))
    for spec, ticket in zip(specs, shorts):
        assert ticket.text == _alone(loaded, hooks, _request(loaded, *spec)), spec[0]


def test_an_error_in_an_overtaking_pass_ends_its_requests_only():
    # S's pass fails; L, whose chunks S overtook, and A go on to their solo texts.
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1, 2])
    gate = Gate(loaded.layers[0])
    boom = Boom(loaded.layers[0])
    scheduler = Scheduler(loaded, hooks, max_per_user=None, prefill_chunk=8)
    long_spec = (LONG, 5, _delta(loaded, 2))
    try:
        a, long = _long_prompt_chunking(loaded, scheduler, gate, long_spec)
        short = scheduler.submit(_request(loaded, "yeah", 6))
        gate.allow(2)  # L's first chunk, a decode step; S's pass waits at the gate
        _take(a, 1)
        boom.armed = "prefill"
        gate.allow(1)
        assert short.get(timeout=TIMEOUT).finish == "error"
        boom.armed = None  # before L's next chunk
        gate.open()
        assert a.wait(TIMEOUT) and long.wait(TIMEOUT)
        stats = scheduler.stats()
    finally:
        boom.remove()
        gate.remove()
        scheduler.close()
    assert short.fault == "server" and stats.errors == 1
    assert long.text == _alone(loaded, hooks, _request(loaded, *long_spec))
    assert a.text == _alone(loaded, hooks, _request(loaded, "hello world", 30, _delta(loaded, 1)))
