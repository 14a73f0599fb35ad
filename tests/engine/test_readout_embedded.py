"""The readout on the real embedded model: steering a dimension moves its reading that way."""

import statistics

import pytest

from steering.data import catalog
from steering.engine.readout import probe_for

pytestmark = pytest.mark.slow

PROMPTS = [
    "What should I pack for a weekend trip?",
    "How do I make a cup of tea?",
    "How can I save money on groceries?",
]


def test_steering_formality_up_or_down_moves_its_reading_up_or_down(smollm):
    vectors = smollm.add_vectors(smollm.compute_vectors({"formality": catalog.examples("formality")}), "readout-test")
    probe = probe_for(vectors)
    strengths = (-1.0, 0.0, 1.0)
    requests = []
    for prompt in PROMPTS:
        for s in strengths:
            request = smollm.request(prompt, {"formality": s}, vector_set="readout-test", max_new_tokens=32)
            request.readout = probe
            requests.append(request)
    readings = [[] for _ in requests]
    for event in smollm.stream_requests(requests):
        if event.readout is not None:
            readings[event.index].append(event.readout[0])
    means = [statistics.mean(r) for r in readings]
    by_strength = {s: [means[i * 3 + j] for i in range(len(PROMPTS))] for j, s in enumerate(strengths)}
    # Every prompt reads in the order of its strengths, and the two ends lie on their sides of 0.
    for low, mid, high in zip(*by_strength.values()):
        assert low < mid < high, by_strength
    assert max(by_strength[-1.0]) < 0 < min(by_strength[1.0]), by_strength
