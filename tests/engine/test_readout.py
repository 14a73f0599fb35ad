"""The readout (readout.py): per row, in the generating passes, and what steering added left out."""

import pytest
import torch

from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, SteeringVectors, compute_vectors, stream_batch
from steering.engine.extraction import calibrate_readout
from steering.engine.readout import probe_for, summarise
from tests.tiny_models import CORPUS, build_tiny

PROMPTS = ["hello world", "what is the report", "wanna grab coffee"]
FORMAL, CASUAL = CORPUS[0::2], CORPUS[1::2]


@pytest.fixture
def tiny32():
    return build_tiny("llama", dtype=torch.float32)


def _vectors(loaded):
    # Two dimensions over layers 1–2: the read layer is one of them, so steering lands below it too.
    return compute_vectors(
        loaded, {"formality": (FORMAL, CASUAL), "warmth": (CASUAL[:2], FORMAL[:2])}, layers=[1, 2], functional_range=2.0
    )


def _requests(loaded, vectors, strengths, *, max_new_tokens=6, readout=True):
    probe = probe_for(vectors) if readout else None
    return [
        GenerationRequest(
            prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=max_new_tokens),
            steering=vectors.layer_deltas(s), readout=probe,
        )
        for prompt, s in zip(PROMPTS, strengths)
    ]


def _readings(loaded, hooks, requests):
    readings = [[] for _ in requests]
    for event in stream_batch(loaded, hooks, requests):
        if event.readout is not None:
            readings[event.index].append(event.readout)
    return readings


def test_it_reads_every_generated_token_of_every_row_steered_or_not(tiny32):
    vectors = _vectors(tiny32)
    hooks = SteeringHooks(tiny32.layers, vectors.layers)
    strengths = [{"formality": 1.0}, {}, {"formality": -1.0, "warmth": 0.5}]
    tokens = [[] for _ in PROMPTS]
    readings = [[] for _ in PROMPTS]
    for event in stream_batch(tiny32, hooks, _requests(tiny32, vectors, strengths)):
        if event.token_id is not None and event.finish != "stop":
            tokens[event.index].append(event.token_id)
            readings[event.index].append(event.readout)
    for row_tokens, row_readings in zip(tokens, readings):
        assert row_tokens and len(row_readings) == len(row_tokens)
        assert all(len(r) == 2 and all(torch.isfinite(torch.tensor(r))) for r in row_readings)
    assert readings[0] != readings[1] != readings[2]


def test_a_rows_readout_in_a_batch_equals_its_readout_alone_in_float32(tiny32):
    vectors = _vectors(tiny32)
    hooks = SteeringHooks(tiny32.layers, vectors.layers)
    strengths = [{"formality": 1.0}, {}, {"formality": -1.0, "warmth": 0.5}]
    batched = _readings(tiny32, hooks, _requests(tiny32, vectors, strengths))
    alone = [_readings(tiny32, hooks, [request])[0] for request in _requests(tiny32, vectors, strengths)]
    # Same tokens, same values: to float32's last bits only, because a batched decode step's
    # hidden states themselves differ from a solo one's by ~1e-8 (attention over the padded
    # cache sums in another order); the readout adds no difference of its own.
    assert [len(r) for r in batched] == [len(r) for r in alone]
    for row, solo in zip(batched, alone):
        assert [v for r in row for v in r] == pytest.approx([v for r in solo for v in r], abs=1e-5)
    assert batched[0][0] == alone[0][0]  # the prefill pass is bit-identical


def test_a_row_without_a_probe_reads_nothing(tiny32):
    vectors = _vectors(tiny32)
    hooks = SteeringHooks(tiny32.layers, vectors.layers)
    requests = _requests(tiny32, vectors, [{"formality": 1.0}, {}])
    requests[1].readout = None
    readings = _readings(tiny32, hooks, requests)
    assert readings[0] and readings[1] == []


def test_it_reads_what_the_model_holds_not_what_steering_added(tiny32):
    # Steering added at the read layer itself changes nothing the model computed before that
    # layer's output: the first token's reading (the prompt's last position) is the unsteered one.
    vectors = _vectors(tiny32)
    layer = vectors.readout["formality"].layer
    at_read_layer = SteeringVectors(**{**vectors._fields(), "layers": [layer]})
    hooks = SteeringHooks(tiny32.layers, [1, 2])

    def first(strengths):
        request = GenerationRequest(
            prompt_ids=tiny32.chat_ids(PROMPTS[0]), params=GenerationParams(max_new_tokens=1),
            steering=at_read_layer.layer_deltas(strengths), readout=probe_for(at_read_layer),
        )
        return _readings(tiny32, hooks, [request])[0][0]

    plain, steered = first({}), first({"formality": 1.0})
    assert hooks.fired[layer] == 1  # the steering was there
    # A dimension read at a later layer reads what the steering changed: compare those read here.
    here = [i for i, read_at in enumerate(probe_for(at_read_layer).layers) if read_at == layer]
    assert here and [steered[i] for i in here] == pytest.approx([plain[i] for i in here], abs=1e-4)


def test_the_reference_ends_read_minus_one_and_plus_one(tiny32):
    vectors = _vectors(tiny32)
    probe = probe_for(vectors)
    ends = vectors.readout["formality"]
    i = probe.dimensions.index("formality")
    span = probe.positive[i] - probe.negative[i]
    read = lambda h: float(-1 + 2 * (probe.directions[i] @ h - probe.negative[i]) / span)
    assert read(ends.negative) == pytest.approx(-1.0) and read(ends.positive) == pytest.approx(1.0)
    assert probe.positive[i] > probe.negative[i]  # the direction points to the positive end


def test_the_ends_survive_the_file_and_a_set_without_them_can_be_calibrated(tiny32, tmp_path):
    vectors = _vectors(tiny32)
    loaded = SteeringVectors.load(vectors.save(tmp_path / "v.safetensors"))
    assert loaded.readout.keys() == vectors.readout.keys()
    assert torch.equal(probe_for(loaded).directions, probe_for(vectors).directions)
    bare = vectors.with_readout({})
    assert probe_for(bare) is None
    again = calibrate_readout(tiny32, bare, {"formality": (FORMAL, CASUAL)})
    assert torch.allclose(again.readout["formality"].positive, vectors.readout["formality"].positive, atol=1e-5)


def test_an_answer_is_summarised_as_means_and_per_token_values():
    summary = summarise(["a", "b"], [(0.5, -1.0), (1.5, 0.0)])
    assert summary == {"dimensions": ["a", "b"], "mean": {"a": 1.0, "b": -0.5}, "tokens": [[0.5, -1.0], [1.5, 0.0]]}
    assert summarise(["a"], [])["mean"] == {"a": None}
