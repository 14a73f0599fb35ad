"""One row's fault is that row's alone: a row whose logits stop being finite (absurd steering,
a temperature that overflows them) ends with an error, and the rows that shared its forward
passes get exactly the text they get alone, greedy or sampled."""

import pytest
import torch

from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, stream_batch

from tests.tiny_models import build_tiny

LAYERS = (1, 2)


@pytest.fixture(scope="module")
def loaded():
    loaded = build_tiny("llama")
    loaded.stop_ids = frozenset()  # every row runs to its own max_new_tokens
    return loaded


@pytest.fixture
def hooks(loaded):
    hooks = SteeringHooks(loaded.layers, LAYERS)
    yield hooks
    hooks.remove()


def _steering(loaded, seed, scale):
    g = torch.Generator().manual_seed(seed)
    return {layer: scale * torch.randn(loaded.hidden_size, generator=g) for layer in LAYERS}


def _request(loaded, prompt, steering=None, **params):
    params.setdefault("max_new_tokens", 10)
    return GenerationRequest(prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(**params), steering=steering or {})


def _run(loaded, hooks, requests):
    texts, finishes, errors = {}, {}, {}
    for event in stream_batch(loaded, hooks, requests):
        texts[event.index] = texts.get(event.index, "") + event.text
        if event.finish is not None:
            finishes[event.index], errors[event.index] = event.finish, event.error
    return texts, finishes, errors


def _normal_rows(loaded, **params):
    return [
        lambda: _request(loaded, "hello world", _steering(loaded, 1, 4.0), **params),
        lambda: _request(loaded, "a longer prompt about the weather today", **params),
    ]


@pytest.mark.parametrize("bad", [float("inf"), 1e30, float("nan")])
@pytest.mark.parametrize("params", [{}, {"temperature": 1.0, "seed": 3}], ids=["greedy", "sampled"])
def test_it_ends_a_row_with_non_finite_logits_alone_and_the_others_get_their_solo_text(loaded, hooks, bad, params):
    makers = _normal_rows(loaded, **params)
    solo = [_run(loaded, hooks, [make()])[0][0] for make in makers]
    poisoned = _request(loaded, "ruin it for everyone", {layer: torch.full((loaded.hidden_size,), bad) for layer in LAYERS}, **params)

    texts, finishes, errors = _run(loaded, hooks, [makers[0](), poisoned, makers[1]()])

    assert [texts[0], texts[2]] == solo
    assert finishes[0] == finishes[2] == "length"
    if finishes[1] == "error":  # 1e30 may stay finite through the norms: then it is just a bad answer
        assert "not finite" in errors[1]
    if bad != 1e30:
        assert finishes[1] == "error"


def test_a_temperature_that_overflows_the_logits_ends_only_its_row(loaded, hooks):
    makers = _normal_rows(loaded, temperature=1.0, seed=5)
    solo = [_run(loaded, hooks, [make()])[0][0] for make in makers]
    overflowing = _request(loaded, "tiny temperature", temperature=1e-300, seed=1)

    texts, finishes, errors = _run(loaded, hooks, [makers[0](), overflowing, makers[1]()])

    assert [texts[0], texts[2]] == solo
    assert finishes[1] == "error" and "not finite" in errors[1]


class PoisonRow:
    """A forward hook that turns one row's hidden states into NaN in the `after`-th decode
    pass: a fault that appears mid-generation, after a clean prefill."""

    def __init__(self, layer, row: int, after: int) -> None:
        self.row, self.after, self.decodes = row, after, 0
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] == 1:
            self.decodes += 1
            if self.decodes == self.after:  # once: after it leaves, row numbers shift
                hidden = hidden.clone()
                hidden[self.row] = float("nan")
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return None

    def remove(self) -> None:
        self._handle.remove()


@pytest.mark.parametrize("params", [{}, {"temperature": 1.0, "seed": 11}], ids=["greedy", "sampled"])
def test_a_row_that_turns_non_finite_mid_decode_ends_alone(loaded, hooks, params):
    makers = _normal_rows(loaded, **params)
    solo = [_run(loaded, hooks, [make()])[0][0] for make in makers]
    middle = _request(loaded, "the row in the middle", max_new_tokens=10, **{k: v for k, v in params.items()})
    poison = PoisonRow(loaded.layers[3], row=1, after=3)
    try:
        texts, finishes, errors = _run(loaded, hooks, [makers[0](), middle, makers[1]()])
    finally:
        poison.remove()

    assert [texts[0], texts[2]] == solo
    assert finishes[1] == "error" and "not finite" in errors[1]
    assert finishes[0] == finishes[2] == "length"


@pytest.mark.slow
@pytest.mark.parametrize("bad", [float("inf"), 1e30])
def test_on_the_embedded_model_an_absurdly_steered_row_leaves_the_others_their_solo_text(smollm, bad):
    loaded = smollm.loaded
    layers = list(range(8, 16))
    hooks = SteeringHooks(loaded.layers, layers)
    try:
        def normal():
            return [
                _request(loaded, "Name a fruit.", max_new_tokens=8, temperature=1.0, seed=4),
                _request(loaded, "Say hello.", max_new_tokens=8),
            ]

        solo = [_run(loaded, hooks, [request])[0].get(0, "") for request in normal()]
        poison = _request(loaded, "Name a colour.", {layer: torch.full((loaded.hidden_size,), bad) for layer in layers},
                          max_new_tokens=8, temperature=1.0, seed=1)
        first, second = normal()
        texts, finishes, errors = _run(loaded, hooks, [first, poison, second])
    finally:
        hooks.remove()
    assert [texts.get(0, ""), texts.get(2, "")] == solo
    if finishes[1] == "error":
        assert "not finite" in errors[1]
