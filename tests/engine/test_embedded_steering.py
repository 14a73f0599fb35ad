"""Behaviour on the real embedded model: the formality vector really moves the text."""

import re
import statistics

import pytest
import torch

from steering.data import catalog
from steering.engine.loading import EMBEDDED_MODEL_ID

pytestmark = pytest.mark.slow

PROMPTS = [
    "What should I pack for a weekend trip?",
    "How do I make a cup of tea?",
    "Can you recommend a good book?",
    "How can I save money on groceries?",
]
CASUAL_WORDS = {
    "gonna", "gotta", "wanna", "yeah", "hey", "cool", "awesome", "kinda", "stuff", "lol", "ya", "dude",
    "super", "totally", "okay", "ok", "lemme", "yep", "nope", "chill", "guys", "folks", "btw", "pretty",
}
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def formality(text: str) -> float:
    """The measure: the share of words of 8 or more letters (formal register favours long,
    Latinate words) minus the share of casual markers (contractions, dropped g's, slang,
    exclamation marks). Higher is more formal."""
    words = WORD.findall(text)
    if not words:
        return 0.0
    long_words = sum(len(w) >= 8 for w in words)
    casual = sum("'" in w or w.lower() in CASUAL_WORDS or w.lower().endswith("in'") for w in words)
    casual += text.count("!")
    return (long_words - casual) / len(words)


def test_the_measure_tells_formal_from_casual_examples():
    positive, negative = catalog.examples("formality")
    assert statistics.mean(map(formality, positive)) > statistics.mean(map(formality, negative)) + 0.1


def test_the_formality_vector_makes_answers_more_formal_or_more_casual(smollm):
    vectors = smollm.compute_vectors({"formality": catalog.examples("formality")})
    smollm.add_vectors(vectors, "formality-test")
    strengths = (-1.0, 0.0, 1.0)
    items = [
        {"prompt": p, "preferences": {"formality": s}, "vector_set": "formality-test", "max_new_tokens": 40}
        for p in PROMPTS
        for s in strengths
    ]
    texts = smollm.generate_batch(items)
    scores = {s: [formality(texts[i * 3 + j]) for i in range(len(PROMPTS))] for j, s in enumerate(strengths)}
    report = "\n".join(f"{item['preferences']}: {text!r}" for item, text in zip(items, texts))
    assert statistics.mean(scores[1.0]) > statistics.mean(scores[0.0]) > statistics.mean(scores[-1.0]), report
    assert sum(f > c for f, c in zip(scores[1.0], scores[-1.0])) >= 3, report
    assert all(text.strip() for text in texts)


def test_the_embedded_model_loads_from_its_gguf_file_in_float32(smollm):
    loaded = smollm.loaded
    assert loaded.model_id == EMBEDDED_MODEL_ID
    assert (loaded.num_layers, loaded.hidden_size) == (30, 576)
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.stop_ids


def test_the_embedded_model_ends_its_turn(smollm):
    events = list(smollm.stream_requests([smollm.request("Say only the word hello.", max_new_tokens=60)]))
    assert events[-1].finish == "stop"
