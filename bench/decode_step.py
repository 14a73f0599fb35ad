"""Before/after of the KV cache's per-step append, side by side in one process: transformers'
`DynamicLayer` (`torch.cat` every step) vs `GrowingLayer` (room reserved, written in place);
and, with --ops, that operation alone next to transformers' RMSNorm vs torch's `rms_norm`
(the second was measured slower in bfloat16 on this CPU and is not used by the engine).

    .venv/bin/python bench/decode_step.py [--dtype bfloat16] [--batch 8] [--tokens 64] [--rounds 3] [--ops]

A `DecodeBatch` of `--batch` chat prompts (each row its own steering on the 16 middle layers,
greedy) is decoded for `--tokens` tokens under each variant, the variants interleaved round
after round so that a shared machine's load falls on all of them alike; prints one JSON line
per variant (median seconds per decode step) and the ratios to "before". The variants give
the same tokens in float32 (checked here too).
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

from bench.chat_load import PROMPTS  # noqa: E402
from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteerableModel  # noqa: E402
from steering.engine.layers import default_layers  # noqa: E402


def set_fused_norm(norm, on: bool) -> None:
    if on:
        norm.forward = lambda x: torch.nn.functional.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
    else:
        norm.__dict__.pop("forward", None)


def decode(model: SteerableModel, requests, reserve: bool) -> tuple[float, list[list[int]]]:
    """Median seconds per decode step (the prefill left out), and each row's tokens."""
    batch = DecodeBatch(model.loaded, model.hooks, requests)
    batch.reserve_cache = reserve
    tokens: list[list[int]] = [[] for _ in requests]
    times = []
    while not batch.done:
        started = time.perf_counter()
        events = batch.step()
        if batch.steps > 1:
            times.append(time.perf_counter() - started)
        for event in events:
            if event.token_id is not None:
                tokens[event.index].append(event.token_id)
    return statistics.median(times), tokens


@torch.inference_mode()
def ops(args) -> None:
    """The two operations alone, at SmolLM2-135M's shapes (30 layers; 3 key/value heads of 64;
    hidden 576), without loading the model: what one decode step spends on appending to the KV
    cache (from a 40-token prompt to 40 + --tokens) and on its 61 RMSNorms, interleaved. Timed in
    this thread's CPU time (run with OMP_NUM_THREADS=1), which a shared machine's load barely
    touches, unlike wall time."""
    from transformers.cache_utils import DynamicLayer
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from steering.engine.kvcache import GrowingLayer

    dtype = getattr(torch, args.dtype)
    layers, heads, dim, hidden, prompt = 30, 3, 64, 576, 40

    def cache_seconds(kind) -> float:
        caches = [kind() for _ in range(layers)]
        for cache in caches:
            cache.update(*(torch.randn(args.batch, heads, prompt, dim, dtype=dtype),) * 2)
        step = torch.randn(args.batch, heads, 1, dim, dtype=dtype)
        started = time.thread_time()
        for _ in range(args.tokens):
            for cache in caches:
                cache.update(step, step)
        return (time.thread_time() - started) / args.tokens

    norm = LlamaRMSNorm(hidden, 1e-5).to(dtype)
    x = torch.randn(args.batch, 1, hidden, dtype=dtype)

    def norm_seconds(fused: bool) -> float:
        set_fused_norm(norm, fused)
        started = time.thread_time()
        for _ in range(200):
            for _ in range(2 * layers + 1):
                norm(x)
        return (time.thread_time() - started) / 200

    variants = {
        "kv cache append, torch.cat (DynamicLayer)": lambda: cache_seconds(DynamicLayer),
        "kv cache append, in place (GrowingLayer)": lambda: cache_seconds(GrowingLayer),
        "RMSNorm, transformers'": lambda: norm_seconds(False),
        "RMSNorm, fused rms_norm": lambda: norm_seconds(True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, measure in variants.items():
            seconds[name].append(measure())
    for name in variants:
        print(json.dumps({"op": name, "dtype": args.dtype, "batch": args.batch, "tokens": args.tokens,
                          "per_step_cpu_ms_median": round(1000 * statistics.median(seconds[name]), 3)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", action="store_true", help="time the two operations alone (no model)")
    args = parser.parse_args()
    if args.ops:
        return ops(args)
    model = SteerableModel.load(dtype=args.dtype)
    loaded = model.loaded
    loaded.stop_ids = frozenset()  # every row runs --tokens steps
    # Each row its own steering on the 16 middle layers (random directions of a modest norm:
    # the cost of steering does not depend on what the vectors mean, and no extraction is needed).
    layers = default_layers(loaded.num_layers)
    model.hooks.attach(layers)
    g = torch.Generator().manual_seed(0)
    steering = [{layer: 0.5 * torch.randn(loaded.hidden_size, generator=g) for layer in layers} for _ in range(args.batch)]
    params = GenerationParams(max_new_tokens=args.tokens)
    requests = lambda: [  # noqa: E731 (fresh requests: cancel events are per request)
        GenerationRequest(loaded.chat_ids(PROMPTS[i % len(PROMPTS)]), params, steering[i]) for i in range(args.batch)
    ]
    variants = {"before (torch.cat cache)": False, "after (reserved cache)": True}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, list[list[int]]] = {}
    decode(model, requests(), True)  # warm-up
    for _ in range(args.rounds):
        for name, reserve in variants.items():
            step, outputs[name] = decode(model, requests(), reserve)
            seconds[name].append(step)
    before = statistics.median(seconds[next(iter(variants))])
    for name in variants:
        median = statistics.median(seconds[name])
        print(json.dumps({
            "variant": name, "dtype": args.dtype, "batch": args.batch, "tokens": args.tokens,
            "step_s_median": round(median, 5), "per_round": [round(s, 5) for s in seconds[name]],
            "speed_vs_before": round(before / median, 3),
            "same_tokens_as_before": outputs[name] == outputs[next(iter(variants))],
        }), flush=True)


if __name__ == "__main__":
    main()
