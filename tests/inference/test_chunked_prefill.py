"""The scheduler prefills newcomers in chunks between the running batch's decode steps: the
running stream keeps getting a token every other forward pass, and everyone still gets exactly
their solo text. The `Gate` of test_scheduler lets the test count forward passes."""

import time

from steering.engine import SteeringHooks
from steering.inference import Scheduler

from tests.inference.test_scheduler import TIMEOUT, Gate, _alone, _delta, _request, _take
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
