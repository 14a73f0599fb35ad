"""Do chat answers loop? Old defaults (greedy, no guard) against the chat defaults and
other candidates, on 20 neutral prompts at the chat's default length. Prints one JSON line
per setting, with the setting itself.

    .venv/bin/python bench/repetition.py [--prompts 20] [--tokens 128]

Per setting: the mean repetition rate (the engine's metric: share of word 3-grams repeating an
earlier one), the mean distinct-2 (unique word bigrams over all bigrams, per answer), how many
answers repeat some 4-word phrase three times or more, the worst count of one 4-word phrase,
and the corpus perplexity of the answers under the model (fluency: sampling raises it).
Sampled settings use seed i for prompt i, so runs are reproducible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.data import catalog  # noqa: E402
from steering.engine import CHAT_DEFAULTS, GenerationParams, SteerableModel  # noqa: E402
from steering.engine.measures import answer_nll, perplexity, repetition_rate  # noqa: E402

WORD = re.compile(r"\w+", re.UNICODE)

SETTINGS = {
    "old: greedy": GenerationParams(),
    "new: chat defaults": CHAT_DEFAULTS,
    "greedy + guard": dataclasses.replace(CHAT_DEFAULTS, temperature=0.0),
    "sampling, no guard": dataclasses.replace(CHAT_DEFAULTS, repetition_penalty=1.0, no_repeat_ngram_size=0),
}


def distinct_2(text: str) -> float:
    words = WORD.findall(text.lower())
    grams = list(zip(words, words[1:]))
    return len(set(grams)) / len(grams) if grams else 1.0


def worst_4gram(text: str) -> int:
    """How often the most frequent word 4-gram of the text occurs."""
    words = WORD.findall(text.lower())
    counts = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return max(counts.values(), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=128, help="the chat's default length (STEERLAB_DEFAULT_NEW_TOKENS)")
    parser.add_argument("--show", action="store_true", help="print the answers too")
    args = parser.parse_args()

    model = SteerableModel.load()
    prompts = catalog.neutral_prompts()[: args.prompts]
    ids = [model.loaded.chat_ids(p) for p in prompts]
    for name, base in SETTINGS.items():
        items = []
        for i, prompt in enumerate(prompts):
            params = dataclasses.replace(base, max_new_tokens=args.tokens, seed=i if base.temperature > 0 else None)
            items.append({"prompt": prompt, **dataclasses.asdict(params)})
        answers = model.generate_batch(items)
        worst = [worst_4gram(a) for a in answers]
        print(json.dumps({
            "setting": name,
            "params": {k: v for k, v in dataclasses.asdict(base).items() if k not in ("seed", "max_new_tokens")},
            "prompts": len(prompts),
            "max_new_tokens": args.tokens,
            "seeds": "prompt index" if base.temperature > 0 else None,
            "repetition_rate": round(statistics.mean(repetition_rate(a) for a in answers), 4),
            "distinct_2": round(statistics.mean(distinct_2(a) for a in answers), 4),
            "answers_repeating_a_4gram_3x": sum(w >= 3 for w in worst),
            "worst_4gram_count": max(worst),
            "perplexity": round(perplexity(answer_nll(model.loaded, ids, answers)), 3),
        }), flush=True)
        if args.show:
            for prompt, answer in zip(prompts, answers):
                print(json.dumps({"prompt": prompt, "answer": answer}))


if __name__ == "__main__":
    main()
