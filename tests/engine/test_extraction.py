import pytest
import torch

from steering.engine import compute_vectors, default_layers, record_activations
from steering.engine.extraction import READ_PROMPTS, orthogonalised, paired_questions

from tests.tiny_models import CORPUS

POSITIVE = CORPUS[0::2]
NEGATIVE = CORPUS[1::2]


def test_it_extracts_one_vector_per_layer(tiny):
    vectors = compute_vectors(tiny, {"formality": (POSITIVE, NEGATIVE)})
    assert vectors.vectors["formality"].shape == (tiny.num_layers, tiny.hidden_size)
    assert vectors.residual_norms.shape == (tiny.num_layers,)
    assert (vectors.residual_norms > 0).all()
    assert vectors.layers == default_layers(tiny.num_layers)
    assert vectors.model_id == tiny.model_id


@pytest.mark.parametrize("read", ["mean", "last", "answer"])
def test_it_gives_the_same_vector_whatever_the_batch_padding(tiny, read):
    alone = compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, read=read, batch_size=1)
    padded = compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, read=read, batch_size=6)
    assert torch.allclose(alone.vectors["f"], padded.vectors["f"], atol=1e-5)
    assert torch.allclose(alone.residual_norms, padded.residual_norms, atol=1e-6)


def _layer_outputs(loaded, text=None, *, ids=None):
    captured = {}
    handles = [
        layer.register_forward_hook(
            lambda m, a, out, i=i: captured.__setitem__(i, (out[0] if isinstance(out, tuple) else out)[0])
        )
        for i, layer in enumerate(loaded.layers)
    ]
    try:
        with torch.inference_mode():
            loaded.model(torch.tensor([ids if ids is not None else loaded.tokenizer(text)["input_ids"]]))
    finally:
        for h in handles:
            h.remove()
    return captured


def test_it_reads_the_mean_without_the_first_token_and_the_last_token(tiny):
    text = CORPUS[2]
    outputs = _layer_outputs(tiny, text)
    mean, _ = record_activations(tiny, [text], read="mean")
    last, _ = record_activations(tiny, [text], read="last")
    for layer, hidden in outputs.items():
        assert torch.allclose(mean[0, layer], hidden[1:].float().mean(0), atol=1e-6)
        assert torch.allclose(last[0, layer], hidden[-1].float(), atol=1e-6)
        assert not torch.allclose(mean[0, layer], hidden.float().mean(0), atol=1e-6)


def test_the_answer_read_is_the_mean_over_the_positions_that_choose_the_texts_tokens(tiny):
    text, question = CORPUS[2], "Any advice?"
    asked = tiny.chat_ids(question)
    answer = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    outputs = _layer_outputs(tiny, ids=asked + answer)
    read, norms = record_activations(tiny, [text], read="answer", questions=[question])
    # The question's last position chooses the answer's first token; the answer's last token
    # chooses nothing of it.
    first, stop = len(asked) - 1, len(asked) + len(answer) - 1
    for layer, hidden in outputs.items():
        assert torch.allclose(read[0, layer], hidden[first:stop].float().mean(0), atol=1e-5)
        assert torch.allclose(norms[layer], hidden[first:stop].float().norm(dim=-1).mean(), atol=1e-4)
    # Only the asked layers, the same values.
    some, _ = record_activations(tiny, [text], read="answer", questions=[question], layers=[1, 0])
    assert torch.equal(some[0], read[0, [1, 0]])


def test_the_two_texts_of_a_contrast_pair_answer_the_same_question():
    questions = paired_questions(["a"] * 6, ["b"] * 6)
    assert questions[:6] == questions[6:]
    assert set(questions) == set(READ_PROMPTS)


@pytest.mark.parametrize("read", ["answer", "mean"])
def test_it_is_the_difference_of_the_class_means(tiny, read):
    vectors = compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}, read=read)
    questions = paired_questions(POSITIVE, NEGATIVE) if read == "answer" else None
    both, _ = record_activations(tiny, [*POSITIVE, *NEGATIVE], read=read, questions=questions)
    pos, neg = both[: len(POSITIVE)], both[len(POSITIVE) :]
    assert torch.allclose(vectors.vectors["f"], pos.mean(0) - neg.mean(0), atol=1e-6)
    assert vectors.read == read


def test_a_new_set_reads_its_examples_as_answers(tiny):
    assert compute_vectors(tiny, {"f": (POSITIVE, NEGATIVE)}).read == "answer"


def test_it_reports_progress_over_all_dimensions(tiny):
    calls = []
    compute_vectors(
        tiny, {"a": (POSITIVE, NEGATIVE), "b": (NEGATIVE, POSITIVE)}, batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (12, 12)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_it_rejects_empty_classes_and_too_short_texts(tiny):
    with pytest.raises(ValueError, match="needs positive and negative"):
        compute_vectors(tiny, {"f": (POSITIVE, [])})
    with pytest.raises(ValueError, match="too short"):
        record_activations(tiny, ["a"])
    with pytest.raises(ValueError, match="read must be"):
        record_activations(tiny, POSITIVE, read="first")


def test_default_layers_are_the_middle_half():
    assert default_layers(30) == list(range(7, 22))
    assert default_layers(4) == [1, 2]
    assert default_layers(1) == [0]


def test_orthogonalised_dimensions_share_nothing_and_stay_close_to_their_own_direction(tiny):
    entangled = compute_vectors(tiny, {
        "a": (CORPUS[0::2], CORPUS[1::2]),
        "b": (CORPUS[0::2][:2], CORPUS[1::2][:2]),  # two of a's three pairs: strongly entangled with a
        "c": (CORPUS[0::3], CORPUS[1::3]),
    })
    apart = orthogonalised(entangled)
    cos = torch.nn.functional.cosine_similarity
    before = max(abs(cos(entangled.vectors["a"][l], entangled.vectors["b"][l], dim=0)).item() for l in entangled.layers)
    assert before > 0.5
    for layer in entangled.layers:
        for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
            assert cos(apart.vectors[x][layer], apart.vectors[y][layer], dim=0).item() == pytest.approx(0.0, abs=1e-4)
        for dim in ("a", "b", "c"):
            assert cos(apart.vectors[dim][layer], entangled.vectors[dim][layer], dim=0).item() > 0.5
            assert apart.norms(dim)[layer].item() == pytest.approx(entangled.norms(dim)[layer].item(), rel=1e-4)
    assert apart.functional_range == entangled.functional_range and apart.layers == entangled.layers
