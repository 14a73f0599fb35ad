"""Conditional steering on the real embedded model: a topical dimension leaves an everyday
answer exactly as it was, and still steers an answer about its subject."""

import pytest

from steering.data import catalog
from steering.engine import GenerationParams, GenerationRequest
from steering.engine.condition_reading import compute_conditions
from steering.engine.embedding import shared_embedder
from steering.engine.measures import effect_scores
from steering.engine.prompting import WordedPrompt

pytestmark = pytest.mark.slow

ON_TOPIC = ["Where should I go for a memorable meal?", "Where could I take a friend who is visiting me?"]
OFF_TOPIC = ["How do I reset a forgotten email password?", "What is the difference between RAM and storage?"]


@pytest.fixture(scope="module")
def cost(smollm):
    # 0.02: the functional range the site's search measures for cost (bench/conditional.py).
    vectors = smollm.compute_vectors({"cost": catalog.examples("cost")}, functional_range=0.02)
    on_topic, off_topic = catalog.condition_prompts()
    conditions, _ = compute_conditions(smollm.loaded, {"cost": on_topic["cost"]}, off_topic)
    return smollm.add_vectors(vectors.with_conditions(conditions), "cost-conditional")


def _answers(smollm, vectors, strength, *, conditional, worded=False):
    requests = []
    for prompt in ON_TOPIC + OFF_TOPIC:
        preferences = {"cost": strength} if strength else {}
        steering, conditions = vectors.conditional_deltas(preferences, {"cost": None} if conditional else {})
        spec = catalog.dimension("cost")
        words = WordedPrompt([{"role": "user", "content": prompt}],
                             {"cost": (spec["prompt_positive"], spec["prompt_negative"], strength)})
        requests.append(GenerationRequest(
            prompt_ids=smollm.loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=24),
            steering=steering, conditions=conditions, worded=words if worded and strength else None,
        ))
    texts = [""] * len(requests)
    for event in smollm.stream_requests(requests):  # one batch: on- and off-topic rows side by side
        texts[event.index] += event.text
    return texts, [r.conditions.decision["cost"] if r.conditions else None for r in requests]


def test_cost_steers_a_question_about_spending_and_leaves_an_everyday_one_alone(smollm, cost):
    plain, _ = _answers(smollm, cost, 0.0, conditional=True)
    luxury, decided = _answers(smollm, cost, 1.0, conditional=True)
    budget, _ = _answers(smollm, cost, -1.0, conditional=True)
    always, _ = _answers(smollm, cost, 1.0, conditional=False)
    report = "\n".join(f"{p!r}: {a!r} | {b!r} | {c!r}" for p, a, b, c in zip(ON_TOPIC + OFF_TOPIC, plain, luxury, always))
    on, off = slice(0, len(ON_TOPIC)), slice(len(ON_TOPIC), None)
    assert [d.applied for d in decided] == [True] * len(ON_TOPIC) + [False] * len(OFF_TOPIC), decided
    # Off topic: the very answer it gets unsteered, where steering it always would change it.
    assert luxury[off] == plain[off], report
    assert any(a != p for a, p in zip(always[off], plain[off])), report
    # On topic: the answers move, and towards their end.
    assert all(a != p for a, p in zip(luxury[on], plain[on])), report
    embedder = shared_embedder()
    references = catalog.heldout_references("cost")
    assert sum(effect_scores(embedder, luxury[on], *references)) > sum(effect_scores(embedder, budget[on], *references)), report


def test_cost_said_in_words_reaches_only_the_questions_about_spending(smollm, cost):
    """Gated prompt + steering: on an everyday question the worded, conditional cost leaves the
    answer exactly as unsteered; on a question about spending it is said, and its words move
    the answer further towards luxury than steering alone."""
    plain, _ = _answers(smollm, cost, 0.0, conditional=True)
    steered, _ = _answers(smollm, cost, 1.0, conditional=True)
    worded, decided = _answers(smollm, cost, 1.0, conditional=True, worded=True)
    report = "\n".join(f"{p!r}: {a!r} | {b!r} | {c!r}" for p, a, b, c in zip(ON_TOPIC + OFF_TOPIC, plain, steered, worded))
    on, off = slice(0, len(ON_TOPIC)), slice(len(ON_TOPIC), None)
    assert [d.applied for d in decided] == [True] * len(ON_TOPIC) + [False] * len(OFF_TOPIC), decided
    assert worded[off] == plain[off], report
    assert all(w != s for w, s in zip(worded[on], steered[on])), report
    embedder = shared_embedder()
    references = catalog.heldout_references("cost")
    assert sum(effect_scores(embedder, worded[on], *references)) > sum(effect_scores(embedder, plain[on], *references)), report
