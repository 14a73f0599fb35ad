"""Conditional steering in the engine: per-row decisions in one batch, and the vector file."""

import pytest
import torch
from safetensors.torch import load_file

from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, SteeringVectors, record_activations, stream_batch
from steering.engine.condition_reading import calibrate_threshold, fit_condition
from steering.engine.conditions import ConditionalSteering, ConditionGate, DimensionDecision, cosine_scores
from steering.engine.vectorfile import VectorFileError

ON, OFF, PLAIN = "please find the documents", "wanna grab coffee", "hello world"
LAYER = 0  # before the steered layers 1 and 2; the read of the prompt is independent of any steering


def _delta(loaded, seed, scale=8.0):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(loaded.hidden_size, generator=g) for layer in (1, 2)}


def _condition(loaded):
    """A condition at LAYER that ON passes and OFF fails: fitted on their own activations."""
    acts, _ = record_activations(loaded, [loaded.chat_ids(ON), loaded.chat_ids(OFF)])
    return fit_condition(LAYER, acts[:1, LAYER], acts[1:, LAYER], threshold=0.0)


def _request(loaded, prompt, *, style=None, topical=None, condition=None, **params):
    conditions = ConditionalSteering({"topic": (condition, topical)}) if topical is not None else None
    return GenerationRequest(
        prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=8, **params),
        steering=style or {}, conditions=conditions,
    )


def _tokens(loaded, hooks, requests, **batch):
    out = [[] for _ in requests]
    events = _stream(loaded, hooks, requests, **batch) if batch else stream_batch(loaded, hooks, requests)
    for event in events:
        if event.token_id is not None:
            out[event.index].append(event.token_id)
    return out


def _stream(loaded, hooks, requests, prefill_chunk):
    from steering.engine import DecodeBatch

    batch = DecodeBatch(loaded, hooks, requests, prefill_chunk=prefill_chunk)
    while not batch.done:
        yield from batch.step()


def test_a_row_about_the_topic_is_steered_and_its_neighbour_is_not_each_as_alone(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    condition = _condition(tiny)
    topical, style = _delta(tiny, 1), _delta(tiny, 2, scale=4.0)

    def requests():
        return [
            _request(tiny, ON, topical=topical, condition=condition),
            _request(tiny, OFF, topical=topical, condition=condition),
            _request(tiny, PLAIN),
            _request(tiny, OFF, style=style, topical=topical, condition=condition),
        ]

    batch, solo = requests(), requests()
    batched = _tokens(tiny, hooks, batch)
    alone = [_tokens(tiny, hooks, [r])[0] for r in solo]
    assert batched == alone
    assert batch[2].conditions is None
    for i in (0, 1, 3):
        mine, its_own = batch[i].conditions.decision["topic"], solo[i].conditions.decision["topic"]
        assert mine.applied == its_own.applied
        assert mine.score == pytest.approx(its_own.score, abs=1e-5)  # the padding changes the summation order only
    assert [batch[i].conditions.decision["topic"].applied for i in (0, 1)] == [True, False]
    assert batch[0].conditions.decision["topic"].score > 0 > batch[1].conditions.decision["topic"].score
    # Applied, the topical steering moves the answer; not applied, the answer is the unsteered one.
    plain_on, plain_off = _tokens(tiny, hooks, [_request(tiny, ON)])[0], _tokens(tiny, hooks, [_request(tiny, OFF)])[0]
    assert batched[0] != plain_on
    assert batched[1] == plain_off
    # Decided before the prefill, an applied dimension steers prompt and answer as if unconditional.
    assert batched[0] == _tokens(tiny, hooks, [_request(tiny, ON, style=topical)])[0]
    # The style steering of the fourth row is its own either way.
    assert batch[3].conditions.decision["topic"].applied is False
    assert batched[3] == _tokens(tiny, hooks, [_request(tiny, OFF, style=style)])[0]


def test_a_prompt_prefilled_in_chunks_is_decided_and_steered_as_a_whole_one(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    condition, topical = _condition(tiny), _delta(tiny, 1)

    def requests():
        return [_request(tiny, p, topical=topical, condition=condition) for p in (ON, OFF, ON)]

    whole, chunked = requests(), requests()
    assert _tokens(tiny, hooks, whole) == _tokens(tiny, hooks, chunked, prefill_chunk=3)
    for a, b in zip(whole, chunked):
        assert a.conditions.decision["topic"].applied == b.conditions.decision["topic"].applied
        assert a.conditions.decision["topic"].score == pytest.approx(b.conditions.decision["topic"].score, abs=1e-5)


def test_a_decision_carried_in_is_kept_unread_and_steers_as_decided(tiny):
    # A stream resumed on another worker carries its first worker's decision: read again in
    # another batch, a bfloat16 score near the threshold could flip.
    hooks = SteeringHooks(tiny.layers, [1, 2])
    condition, topical = _condition(tiny), _delta(tiny, 1)
    read = _request(tiny, OFF, topical=topical, condition=condition)
    _tokens(tiny, hooks, [read])
    assert read.conditions.decision["topic"].applied is False
    flipped = {"topic": {**read.conditions.decision_dict()["topic"], "applied": True}}
    carried = _request(tiny, OFF, topical=topical, condition=condition)
    assert carried.conditions.decided(flipped)
    neighbour = _request(tiny, ON, topical=topical, condition=condition)  # still read, beside it
    tokens = _tokens(tiny, hooks, [carried, neighbour])
    assert carried.conditions.decision_dict() == flipped
    assert neighbour.conditions.decision["topic"].applied is True
    assert tokens[0] == _tokens(tiny, hooks, [_request(tiny, OFF, style=topical)])[0]  # steered as carried
    assert not _request(tiny, OFF, topical=topical, condition=condition).conditions.decided({"other": flipped["topic"]})


def test_a_threshold_above_every_score_turns_the_dimension_off(tiny):
    hooks = SteeringHooks(tiny.layers, [1, 2])
    condition, topical = _condition(tiny), _delta(tiny, 1)
    request = _request(tiny, ON, topical=topical, condition=condition.with_threshold(1.01))
    assert _tokens(tiny, hooks, [request]) == _tokens(tiny, hooks, [_request(tiny, ON)])
    assert request.conditions.decision["topic"].applied is False


def test_the_gate_reads_only_each_rows_own_prompt_tokens():
    hidden = torch.arange(3 * 5 * 3, dtype=torch.float32).reshape(3, 5, 3)
    hidden[0, 0] = float("nan")  # padding may hold NaN; it must not reach the mean
    row = ConditionalSteering({"d": (fit_condition(1, torch.ones(1, 3), -torch.ones(1, 3)), {})})
    gate = ConditionGate([row, row, None], [3, 5, 5], width=5)  # row 0: 2 columns of padding
    for start, stop in ((0, 2), (2, 5)):
        gate.observers(start, stop)[1](hidden[:, start:stop])
    means = gate._sums[1]
    assert torch.allclose(means[0], hidden[0, 3:5].mean(0))  # the prompt's tokens after its first
    assert torch.allclose(means[1], hidden[1, 1:5].mean(0))
    assert not means[2].any()  # a row without conditions is not read


def test_the_threshold_falls_in_the_middle_of_the_gap():
    assert calibrate_threshold(torch.tensor([0.5, 0.6]), torch.tensor([-0.2, 0.1])) == pytest.approx(0.3)
    # Overlapping classes: the cut that gets most right on both sides.
    cut = calibrate_threshold(torch.tensor([0.4, 0.5, 0.05]), torch.tensor([-0.3, 0.0, 0.1]))
    assert 0.1 < cut <= 0.4


def _vectors(loaded, conditions=None):
    g = torch.Generator().manual_seed(0)
    return SteeringVectors(
        model_id="tiny", hidden_size=loaded.hidden_size, num_layers=loaded.num_layers, layers=[1, 2],
        vectors={"cost": torch.randn(loaded.num_layers, loaded.hidden_size, generator=g),
                 "formality": torch.randn(loaded.num_layers, loaded.hidden_size, generator=g)},
        residual_norms=torch.ones(loaded.num_layers), functional_range={"cost": 0.5, "formality": 0.5},
        conditions=conditions or {},
    )


def test_conditions_survive_the_vector_file_and_older_readers_find_only_vectors(tiny, tmp_path):
    condition = _condition(tiny).with_threshold(0.25)
    path = _vectors(tiny, {"cost": condition}).save(tmp_path / "set.safetensors")
    loaded = SteeringVectors.load(path)
    again = loaded.conditions["cost"]
    assert (again.layer, again.threshold) == (LAYER, 0.25)
    assert torch.equal(again.direction, condition.direction) and torch.equal(again.center, condition.center)
    # What a reader of vectors only looks for is there as before, apart from the condition tensors.
    names = set(load_file(str(path)))
    assert {"vector.cost", "vector.formality", "residual_norms"} <= names
    assert names - {"vector.cost", "vector.formality", "residual_norms"} == {"condition.direction.cost", "condition.center.cost"}


def test_a_set_splits_a_profile_into_style_steering_and_gated_topical_dimensions(tiny):
    vectors = _vectors(tiny, {"cost": _condition(tiny)})
    preferences = {"cost": 1.0, "formality": -0.5}
    always, gated = vectors.conditional_deltas(preferences, {"cost": None})
    assert torch.allclose(always[1], vectors.layer_deltas({"formality": -0.5})[1])
    condition, deltas = gated.dimensions["cost"]
    assert torch.allclose(deltas[2], vectors.layer_deltas({"cost": 1.0})[2])
    assert condition.threshold == vectors.conditions["cost"].threshold
    # A staff threshold overrides the calibrated one; a style dimension, or none topical, is always added.
    assert vectors.conditional_deltas(preferences, {"cost": 0.4})[1].dimensions["cost"][0].threshold == 0.4
    assert vectors.conditional_deltas(preferences, {})[1] is None
    assert vectors.conditional_deltas({"cost": 0.0}, {"cost": None}) == ({}, None)


def test_a_file_whose_condition_lacks_its_tensors_is_refused(tiny, tmp_path):
    path = _vectors(tiny, {"cost": _condition(tiny)}).save(tmp_path / "set.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    tensors = {k: v for k, v in load_file(str(path)).items() if k != "condition.center.cost"}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(VectorFileError, match="condition of 'cost'"):
        SteeringVectors.load(path)


def test_scores_are_cosines_from_the_centre():
    condition = fit_condition(0, torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]))  # centre (1, 0)
    assert cosine_scores(torch.tensor([[2.0, 0.0], [1.0, 5.0], [-1.0, 0.0]]), condition).tolist() == pytest.approx([1.0, 0.0, -1.0], abs=1e-3)


def test_the_joint_budget_caps_the_style_and_topical_steering_once_summed(tiny):
    """Capped part by part, a style dimension and a topical one that applies would add up to
    twice the budget; the budget is on what the row finally gets."""
    vectors = _vectors(tiny, {"cost": _condition(tiny)}).with_joint_range(0.6)
    preferences = {"cost": 1.0, "formality": 1.0}
    always, gated = vectors.conditional_deltas(preferences, {"cost": None})
    _, cost_deltas = gated.dimensions["cost"]
    total = gated.total(always, cost_deltas)
    whole = vectors.layer_deltas(preferences)  # the same two dimensions, unconditionally
    for layer in (1, 2):
        assert total[layer].norm().item() == pytest.approx(0.6 * vectors.residual_norms[layer].item(), rel=1e-4)
        assert torch.allclose(total[layer], whole[layer], atol=1e-6)
    # When the topical dimension does not apply, the style one alone is within the budget: untouched.
    assert torch.equal(gated.total(always, {})[1], always[1])


def test_a_topical_dimension_that_applies_alone_keeps_its_range_over_the_budget(tiny):
    """The budget is measured for dimensions steering together: a row whose only applying
    dimension is topical gets its whole range, as one style dimension alone would, and the
    budget returns when a style dimension steers beside it."""
    vectors = _vectors(tiny, {"cost": _condition(tiny)}).with_joint_range(0.3)  # each range is 0.5
    for preferences, expected in (({"cost": 1.0}, 0.5), ({"cost": 1.0, "formality": 1.0}, 0.3)):
        always, gated = vectors.conditional_deltas(preferences, {"cost": None})
        gated.decision = {"cost": DimensionDecision(True, 0.9, 0.0)}
        total = gated.total(always, gated.dimensions["cost"][1])
        assert total[1].norm().item() == pytest.approx(expected, rel=1e-4)
    # Decided off, the style dimension alone is left its own range too.
    gated.decision = {"cost": DimensionDecision(False, -0.9, 0.0)}
    assert gated.total(always, {})[1].norm().item() == pytest.approx(0.5, rel=1e-4)
