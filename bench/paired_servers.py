"""Two served settings side by side: two throwaway servers that differ only in the environment
given, each round of users sent to one then the other, alternately, so a shared machine's drift
lands on both alike (back-to-back runs of `bench/targets.py` on the 2-core host moved the served
throughput by 1.4× between runs, 2026-12-07).

    .venv/bin/python bench/paired_servers.py --a STEERLAB_BURST_WINDOW_MS=100 --b STEERLAB_BURST_WINDOW_MS=0 \\
        [--users 8] [--tokens 48] [--rounds 8]

Prints one JSON line per round, then each side's medians and the ratios b / a, with the physical
limits measured in the same run (this process's forward-only decode at batch 8 and the batched
prefill of the users' prompts, the served dtype), before and after the rounds. Greedy, each user
with their own formality strength (as `bench/targets.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.chat_load import PROMPTS, percentile  # noqa: E402
from bench.server import BenchServer  # noqa: E402
from bench.targets import batch_prefill_seconds, forward_only, one_round  # noqa: E402
from steering.engine import SteerableModel  # noqa: E402
from steering.engine.loading import resolve_dtype  # noqa: E402

# After a round, the server that ran it keeps its OpenMP threads spinning for a moment; the next
# round (the other server) waits that out.
SETTLE_S = 0.5


def setting(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE…], got {text!r}")
    return dict(pairs)


async def round_figures(server: BenchServer, users: int, tokens: int) -> dict:
    rate, ttfts = await one_round(server, users, tokens)
    return {"tokens_per_s": rate, "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p95_s": percentile(ttfts, 0.95),
            "ttft_max_s": max(ttfts)}


def limits(model: SteerableModel, users: int) -> dict:
    return {"forward_only_tokens_per_s": statistics.median(forward_only(model, users) for _ in range(3)),
            "batch_prefill_s": batch_prefill_seconds(model, 3)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=setting, required=True, help="NAME=VALUE[,…]: side a's server environment")
    parser.add_argument("--b", type=setting, required=True, help="NAME=VALUE[,…]: side b's server environment")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side")
    args = parser.parse_args()
    if args.users > len(PROMPTS):
        parser.error(f"at most {len(PROMPTS)} users (one prompt each, as the batched-prefill limit)")

    dtype = resolve_dtype("auto", torch.device("cpu"))
    print(json.dumps({"settings": {"a": args.a, "b": args.b, "users": args.users, "tokens": args.tokens,
                                   "rounds": args.rounds, "dtype": str(dtype).removeprefix("torch."),
                                   "threads": torch.get_num_threads(),
                                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}), flush=True)
    model = SteerableModel.load(dtype=dtype)
    forward_only(model, args.users, steps=4)  # warm-up
    before = limits(model, args.users)
    print(json.dumps({"limit": "before", **before}), flush=True)
    rounds: dict[str, list[dict]] = {"a": [], "b": []}
    with BenchServer(users=args.users, env={"STEERLAB_DTYPE": "auto", **args.a}) as a, \
            BenchServer(users=args.users, env={"STEERLAB_DTYPE": "auto", **args.b}) as b:
        servers = {"a": a, "b": b}
        for server in servers.values():
            await one_round(server, args.users, 8)  # warm-up: first-use costs stay out of the figures
        for index in range(args.rounds):
            # a, b then b, a: neither side always runs right after the other
            for side in ("a", "b") if index % 2 == 0 else ("b", "a"):
                time.sleep(SETTLE_S)
                figures = await round_figures(servers[side], args.users, args.tokens)
                rounds[side].append(figures)
                print(json.dumps({"round": index, "side": side, **{k: round(v, 4) for k, v in figures.items()}}), flush=True)
    after = limits(model, args.users)
    print(json.dumps({"limit": "after", **after}), flush=True)
    limit = {key: statistics.mean([before[key], after[key]]) for key in before}
    medians = {side: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for side, runs in rounds.items()}
    summary = {side: {**{k: round(v, 4) for k, v in m.items()},
                      "of_forward_only": round(m["tokens_per_s"] / limit["forward_only_tokens_per_s"], 3),
                      "ttft_p95_over_batch_prefill": round(m["ttft_p95_s"] / limit["batch_prefill_s"], 2)}
               for side, m in medians.items()}
    print(json.dumps({"median": summary, "b_over_a": {key: round(medians["b"][key] / medians["a"][key], 3)
                                                      for key in medians["a"]}}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
