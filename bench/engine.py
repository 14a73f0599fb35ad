"""Engine benchmark on the embedded model: prints one JSON line of figures.

    .venv/bin/python bench/engine.py [--tokens 64] [--repeats 3] [--batch 8]

- single-stream tokens/s, unsteered and steered (formality at 0.8 on 15 layers), and their ratio
- aggregate tokens/s of `--batch` requests with as many different steering configs in one
  batch, and its speed-up over one request alone
- for reference, single-stream tokens/s of transformers' own `generate` on the same prompt
- time to extract activations of 100 examples batched (16 a batch) and one at a time

End-of-turn stops are switched off so every run generates exactly `--tokens` tokens; each
figure is the median of `--repeats` runs, steered and unsteered runs interleaved so that
drifts of the machine hit both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from steering.data import catalog  # noqa: E402
from steering.engine import SteerableModel, record_activations  # noqa: E402

PROMPTS = catalog.neutral_prompts()


def timed_generation(model: SteerableModel, items: list[dict]) -> float:
    """Tokens per second over all rows of one batch."""
    requests = [model.request(**item) for item in items]
    start = time.perf_counter()
    tokens = sum(1 for event in model.stream_requests(requests) if event.token_id is not None)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    model = SteerableModel.load()
    model.loaded.stop_ids = frozenset()  # fixed-length runs
    positive, negative = catalog.examples("formality")
    model.add_vectors(model.compute_vectors({"formality": (positive, negative)}), "formality")

    def item(i: int, strength: float) -> dict:
        prefs = {"formality": strength} if strength else None
        return {"prompt": PROMPTS[i % len(PROMPTS)], "preferences": prefs, "max_new_tokens": args.tokens}

    timed_generation(model, [item(0, 0.5)])  # warm-up
    plain, steered = [], []
    for _ in range(args.repeats):
        plain.append(timed_generation(model, [item(0, 0.0)]))
        steered.append(timed_generation(model, [item(0, 0.8)]))
    prompt = torch.tensor([model.loaded.chat_ids(PROMPTS[0])])
    hf_single = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.loaded.model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.tokens,
            min_new_tokens=args.tokens, do_sample=False, pad_token_id=model.loaded.pad_id,
        )
        hf_single.append(args.tokens / (time.perf_counter() - start))
    fired_before = sum(model.hooks.fired.values())
    strengths = [round(-1 + 2 * i / max(args.batch - 1, 1), 3) for i in range(args.batch)]
    batched = [
        timed_generation(model, [item(i, s) for i, s in enumerate(strengths)]) for _ in range(args.repeats)
    ]
    assert sum(model.hooks.fired.values()) > fired_before, "the batched runs were not steered"

    texts = [*positive[:50], *negative[:50]]
    record_activations(model.loaded, texts[:16], batch_size=16)  # warm-up
    start = time.perf_counter()
    record_activations(model.loaded, texts, batch_size=16)
    extract_batched = time.perf_counter() - start
    start = time.perf_counter()
    record_activations(model.loaded, texts, batch_size=1)
    extract_single = time.perf_counter() - start

    single_plain, single_steered = statistics.median(plain), statistics.median(steered)
    aggregate = statistics.median(batched)
    print(json.dumps({
        "model": model.loaded.model_id,
        "device": str(model.loaded.device),
        "threads": torch.get_num_threads(),
        "tokens_per_request": args.tokens,
        "single_tokens_per_s_unsteered": round(single_plain, 2),
        "single_tokens_per_s_steered": round(single_steered, 2),
        "steered_over_unsteered": round(single_steered / single_plain, 3),
        "batch": args.batch,
        "batched_aggregate_tokens_per_s": round(aggregate, 2),
        "batched_over_single": round(aggregate / single_plain, 2),
        "hf_generate_single_tokens_per_s": round(statistics.median(hf_single), 2),
        "batched_over_hf_generate_single": round(aggregate / statistics.median(hf_single), 2),
        "extract_100_batched_s": round(extract_batched, 2),
        "extract_100_one_at_a_time_s": round(extract_single, 2),
        "extract_speedup": round(extract_single / extract_batched, 2),
    }))


if __name__ == "__main__":
    main()
