"""Steering the answer only against steering prompt and answer, at the same fixed strengths: how
far each moves Effect and how much of the answer's relevance to the question it keeps. One JSON
line per (dimension, strength, policy), with the settings first.

    .venv/bin/python bench/answer_only.py [--dimensions cost,age] [--ranges 0.015,0.02,0.03]
                                          [--prompts 6] [--tokens 40] [--dtype float32|bfloat16]

Vectors: CAA from the shipped pairs (as a computed set), strengths in residual-norm units (the
unit of a set's functional range), the same for both policies; prompts: the held-out split's
first --prompts suggestion prompts and the dimension's first four on-topic prompts; greedy.
Effect is the mean Effect's change from the unsteered answers'; relevance as in
steering/engine/measures.py (the answers' cosine to their prompts over the unsteered answers').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.data import catalog  # noqa: E402
from steering.engine import GenerationParams, SteerableModel  # noqa: E402
from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.generation import stream_batch  # noqa: E402
from steering.engine.measures import effect_scores, is_degenerate, prompt_similarities, relevance  # noqa: E402
from steering.engine.request import GenerationRequest  # noqa: E402
from steering.engine.rows import unit_range  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dimensions", default="cost,age")
    parser.add_argument("--ranges", default="0.015,0.02,0.03")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    dimensions, ranges = args.dimensions.split(","), [float(x) for x in args.ranges.split(",")]
    print(json.dumps({"settings": vars(args)}), flush=True)

    model = SteerableModel.load(dtype=args.dtype)
    # Every shipped dimension, as a computed set (the residual norms are measured over all their pairs).
    vectors = model.add_vectors(model.compute_vectors({name: catalog.examples(name) for name in catalog.dimension_names()}))
    unit, split, embedder = unit_range(vectors), catalog.heldout(), shared_embedder()
    params = GenerationParams(max_new_tokens=args.tokens)
    for dim in dimensions:
        prompts = split["prompts"][: args.prompts] + split["on_topic"][dim][:4]
        ids = [model.loaded.chat_ids(p) for p in prompts]
        settings = [(0.0, True)] + [(sign * c, policy) for c in ranges for sign in (1, -1) for policy in (True, False)]
        requests = [GenerationRequest(prompt_ids=i, params=params, steering=unit.layer_deltas({dim: s}) if s else {},
                                      steer_prompt=policy) for s, policy in settings for i in ids]
        texts = [""] * len(requests)
        for event in stream_batch(model.loaded, model.hooks, requests):
            texts[event.index] += event.text
        n, refs = len(ids), catalog.heldout_references(dim)
        groups = [texts[k * n : (k + 1) * n] for k in range(len(settings))]
        base_cos = prompt_similarities(embedder, prompts, groups[0])
        effect_0 = sum(effect_scores(embedder, groups[0], *refs)) / n
        for (strength, policy), answers in zip(settings[1:], groups[1:]):
            print(json.dumps({
                "dimension": dim, "strength": strength, "steers": "prompt and answer" if policy else "answer only",
                "effect_moved": round(sum(effect_scores(embedder, answers, *refs)) / n - effect_0, 3),
                "relevance": round(relevance(prompt_similarities(embedder, prompts, answers), base_cos), 3),
                "degenerate": sum(is_degenerate(a) for a in answers), "of": n,
            }), flush=True)


if __name__ == "__main__":
    main()
