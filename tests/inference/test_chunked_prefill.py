"""The scheduler prefills newcomers in chunks between the running batch's decode steps: the
running stream keeps getting a token every other forward pass, and everyone still gets exactly
their solo text. The `Gate` of test_scheduler lets the test count forward passes."""

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
