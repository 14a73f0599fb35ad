"""Scheduler benchmark on the embedded model: prints one JSON line of figures.

    .venv/bin/python bench/scheduler.py [--tokens 48] [--clients 8] [--stagger 0.25]
                                        [--dtype auto] [--prefill-chunk 64] [--rounds 3]

- one request alone through the scheduler: tokens/s and time to first token
- `--clients` requests, each with its own formality strength (−1…+1), arriving one every
  `--stagger` seconds, so that most join a batch that is already decoding: aggregate tokens/s
  (all tokens over the time from the first arrival to the last finish), its speed-up over one
  alone, and p50 / p95 of time to first token (over `--rounds` rounds), and p95 over the
  single request's
- the same clients arriving at once: aggregate tokens/s against the model's forward-only
  decode at that batch (bench/targets.py's `forward_only`, measured before each round), the
  in-process counterpart of the served "8 users / forward-only batch 8" target
- with `--long-prompt N` (and a `--prefill-chunk`): while one request streams, a prompt of
  about N tokens arrives, and a short one right after it; the short one's time to first token
  against a request alone's, beside the long one's. Before short newcomers overtook a long
  prompt's chunked prefill, the short one's first token came after the long one's

End-of-turn stops are switched off so every request generates exactly `--tokens` tokens.
`--dtype` defaults to the engine's own (float32 on a CPU); `auto` is what the site serves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from steering.data import catalog  # noqa: E402
from steering.engine import GenerationParams, GenerationRequest, SteeringHooks, compute_vectors, load_model  # noqa: E402
from steering.inference import Scheduler  # noqa: E402
from bench.targets import forward_only  # noqa: E402

PROMPTS = catalog.neutral_prompts()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(scheduler: Scheduler, requests: list[GenerationRequest], stagger: float) -> dict:
    """Submit `requests` `stagger` seconds apart and wait for all of them."""
    return rounds(scheduler, [requests], stagger)


def rounds(scheduler: Scheduler, batches: list[list[GenerationRequest]], stagger: float) -> dict:
    """`run` per batch of requests, one after the other: the median tokens/s, TTFT over all."""
    results = [_round(scheduler, requests, stagger) for requests in batches]
    first_tokens = [t for r in results for t in r["ttfts"]]
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in results),
        "ttft_p50_s": statistics.median(first_tokens),
        "ttft_p95_s": percentile(first_tokens, 0.95),
        "ttfts": [round(t, 3) for t in first_tokens],
    }


def _round(scheduler: Scheduler, requests: list[GenerationRequest], stagger: float) -> dict:
    start = time.perf_counter()
    tickets = []
    for i, request in enumerate(requests):
        time.sleep(max(0.0, start + i * stagger - time.perf_counter()))
        tickets.append(scheduler.submit(request))
    for ticket in tickets:
        ticket.wait()
    elapsed = time.perf_counter() - start
    assert all(t.finish == "length" for t in tickets), [t.error or t.finish for t in tickets]
    return {"tokens_per_s": sum(t.tokens for t in tickets) / elapsed, "ttfts": [t.time_to_first_token for t in tickets]}


def long_and_short(scheduler: Scheduler, loaded, request, long_tokens: int) -> dict:
    """One request streaming; a prompt of about `long_tokens` tokens arrives, then a short one
    just after: both times to first token."""
    streaming = scheduler.submit(request(0, 0.3))
    while streaming.tokens == 0 and not streaming.done:
        time.sleep(0.005)
    words = " ".join(PROMPTS) * (1 + long_tokens // 200)
    long_ids = loaded.chat_ids(words)[-long_tokens:]
    long = scheduler.submit(GenerationRequest(prompt_ids=long_ids, params=request(0, 0.0).params,
                                              steering=request(0, -0.3).steering))
    time.sleep(0.02)  # its prefill has started in chunks
    short = scheduler.submit(request(1, 0.6))
    for ticket in (streaming, long, short):
        ticket.wait()
    return {"long_tokens": len(long_ids), "long": long.time_to_first_token, "short": short.time_to_first_token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--stagger", type=float, default=0.25, help="seconds between two arrivals")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of each measurement (TTFT percentiles over all)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or auto (default: the engine's own)")
    parser.add_argument("--prefill-chunk", type=int, default=0, help="the scheduler's prefill_chunk (0: whole prompts)")
    parser.add_argument("--long-prompt", type=int, default=0, help="tokens of the long prompt a short newcomer arrives behind (0: not measured)")
    args = parser.parse_args()

    loaded = load_model("embedded", dtype=args.dtype)
    loaded.stop_ids = frozenset()  # fixed-length runs
    positive, negative = catalog.examples("formality")
    vectors = compute_vectors(loaded, {"formality": (positive[:16], negative[:16])})
    hooks = SteeringHooks(loaded.layers, vectors.layers)

    def request(i: int, strength: float) -> GenerationRequest:
        return GenerationRequest(
            prompt_ids=loaded.chat_ids(PROMPTS[i % len(PROMPTS)]),
            params=GenerationParams(max_new_tokens=args.tokens),
            steering=vectors.layer_deltas({"formality": strength}),
        )

    strengths = [round(-1 + 2 * i / max(args.clients - 1, 1), 3) for i in range(args.clients)]
    clients = [[request(r * args.clients + i, s) for i, s in enumerate(strengths)] for r in range(args.rounds)]
    # --long-prompt runs three rows at once (a stream, the long prompt, the short newcomer).
    max_batch = max(args.clients, 3 if args.long_prompt else 1)
    with Scheduler(loaded, hooks, max_batch=max_batch, max_queue=4 * args.clients, max_per_user=None,
                   prefill_chunk=args.prefill_chunk or None) as scheduler:
        run(scheduler, [request(0, 0.5)], 0)  # warm-up
        alone = rounds(scheduler, [[request(r, 0.8)] for r in range(args.rounds)], 0)
        staggered = rounds(scheduler, clients, args.stagger)
        # Each round of simultaneous arrivals right after a forward-only measurement, so that
        # a shared machine's changing load weighs on both sides of the ratio alike.
        limits, at_once = [], []
        for requests in clients:
            limits.append(forward_only(SimpleNamespace(loaded=loaded), args.clients))
            at_once.append(rounds(scheduler, [requests], 0)["tokens_per_s"])
        behind_long = [long_and_short(scheduler, loaded, request, args.long_prompt) for _ in range(args.rounds)] if args.long_prompt else []
        stats = scheduler.stats()
    limit = statistics.median(limits)
    at_once = {"tokens_per_s": statistics.median(at_once)}
    print(json.dumps({
        "model": loaded.model_id,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prefill_chunk": args.prefill_chunk or None,
        "max_batch": max_batch,
        "tokens_per_request": args.tokens,
        "rounds": args.rounds,
        "single_tokens_per_s": round(alone["tokens_per_s"], 2),
        "single_ttft_s": round(alone["ttft_p50_s"], 3),
        "clients": args.clients,
        "stagger_s": args.stagger,
        "aggregate_tokens_per_s": round(staggered["tokens_per_s"], 2),
        "aggregate_over_single": round(staggered["tokens_per_s"] / alone["tokens_per_s"], 2),
        "ttft_p50_s": round(staggered["ttft_p50_s"], 3),
        "ttft_p95_s": round(staggered["ttft_p95_s"], 3),
        "ttft_p95_over_single": round(staggered["ttft_p95_s"] / alone["ttft_p50_s"], 2),
        "ttfts_s": staggered["ttfts"],
        "at_once_tokens_per_s": round(at_once["tokens_per_s"], 2),
        "forward_only_tokens_per_s": round(limit, 2),
        "at_once_over_forward_only": round(at_once["tokens_per_s"] / limit, 3),
        **({"long_prompt_tokens": behind_long[0]["long_tokens"],
            "behind_long_short_ttft_s": round(statistics.median(r["short"] for r in behind_long), 3),
            "behind_long_long_ttft_s": round(statistics.median(r["long"] for r in behind_long), 3),
            "behind_long_short_over_single": round(statistics.median(r["short"] for r in behind_long) / alone["ttft_p50_s"], 2)}
           if behind_long else {}),
        "joins": stats.joins,
        "prefills": stats.prefills,
    }))


if __name__ == "__main__":
    main()
