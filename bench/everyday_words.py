"""The topical preferences said in words ("prompt with steering"'s system prompt, no steering) on
the held-out split's everyday questions, which concern none of them: how far the answers move
from the unsteered ones (issue 24 asks ≥ 0.9 cosine for the steered profile), and whether they
still answer (relevance). Each sign is one batch of the plain and the worded rows.

    OMP_NUM_THREADS=2 .venv/bin/python bench/everyday_words.py [--dtype bfloat16] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.data import catalog  # noqa: E402
from steering.engine import SteerableModel, served_greedy  # noqa: E402
from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.generation import stream_batch  # noqa: E402
from steering.engine.measures import answer_similarity, prompt_similarities, relevance  # noqa: E402
from steering.engine.prompting import preferences_instruction  # noqa: E402
from steering.engine.request import GenerationRequest  # noqa: E402

TOPICAL = ("age", "ambiance", "cost", "culture", "time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    model = SteerableModel.load(dtype=args.dtype)
    everyday = catalog.heldout()["everyday"]
    params = served_greedy(args.tokens)
    print(json.dumps({"settings": {"dtype": args.dtype, "tokens": args.tokens, "prompts": len(everyday),
                                   "dimensions": TOPICAL, "answers": "greedy with the chat's repetition guards"}}))
    embedder = shared_embedder()
    for sign in (1.0, -1.0):
        specs = [catalog.dimension(dim) for dim in TOPICAL]
        words = preferences_instruction([(spec["prompt_positive"], spec["prompt_negative"], sign) for spec in specs])
        requests = [GenerationRequest(prompt_ids=model.loaded.chat_ids(p, system=system), params=params)
                    for system in (None, words) for p in everyday]
        texts = [""] * len(requests)
        for event in stream_batch(model.loaded, model.hooks, requests):
            texts[event.index] += event.text
        n = len(everyday)
        plain, worded = texts[:n], texts[n:]
        kept = relevance(prompt_similarities(embedder, everyday, worded), prompt_similarities(embedder, everyday, plain))
        print(json.dumps({"strength": sign, "words": words,
                          "cosine_to_unsteered": round(answer_similarity(embedder, worded, plain), 3),
                          "relevance": round(kept, 3), "answers": [{"prompt": p, "plain": a, "worded": b}
                                                                    for p, a, b in zip(everyday, plain, worded)]},
                         ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
