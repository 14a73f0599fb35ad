"""What per-request steering costs inside vLLM, in one process: 8 requests unsteered vs the
same 8 with 8 different steerings (layers 7–21), through `VllmScheduler`, interleaved rounds.

    OMP_NUM_THREADS=2 .venv-vllm/bin/python bench/vllm_steering_cost.py [--tokens 64] [--rounds 3]

Greedy, end-of-turn stops off (every request runs --tokens), float32, eager, embedded model.
Prints one JSON line per round and the medians' ratio (target ≥ 0.90), with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from bench.chat_load import PROMPTS  # noqa: E402
from steering.engine import GenerationParams, GenerationRequest, load_model  # noqa: E402
from steering.vllm_inference.weights import vllm_model_dir  # noqa: E402
from steering.vllm_inference.engine import VllmScheduler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model("embedded", device="cpu", dtype="float32")
    scheduler = VllmScheduler(loaded, vllm_model_dir(loaded, "embedded", ROOT / "var/vllm-models"), max_batch=16,
                              max_per_user=None, steered_rows=16, eager=True, dtype="float32")
    loaded.stop_ids = frozenset()  # every request runs --tokens: equal work in both arms
    scheduler.loaded = loaded
    generator = torch.Generator().manual_seed(0)
    steerings = []
    for _ in range(8):
        direction = torch.randn(loaded.hidden_size, generator=generator)
        steerings.append({layer: direction / direction.norm() * 2.0 for layer in range(7, 22)})

    def arm(steered: bool) -> float:
        requests = [GenerationRequest(prompt_ids=loaded.chat_ids(PROMPTS[i]),
                                      params=GenerationParams(max_new_tokens=args.tokens),
                                      steering=steerings[i] if steered else {}) for i in range(8)]
        start = time.perf_counter()
        tickets = [scheduler.submit(r) for r in requests]
        for t in tickets:
            t.wait()
        return sum(t.tokens for t in tickets) / (time.perf_counter() - start)

    arm(False)  # warm-up
    rates = {"unsteered": [], "steered": []}
    for i in range(args.rounds):
        for name in (("unsteered", "steered") if i % 2 == 0 else ("steered", "unsteered")):
            rates[name].append(arm(name == "steered"))
        print(json.dumps({"round": i, **{k: round(v[-1], 1) for k, v in rates.items()}}), flush=True)
    u, s = statistics.median(rates["unsteered"]), statistics.median(rates["steered"])
    print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tokens": args.tokens,
                      "omp_threads": os.environ["OMP_NUM_THREADS"], "loadavg": [round(x, 2) for x in os.getloadavg()],
                      "unsteered_8_tok_s": round(u, 1), "steered_8_tok_s": round(s, 1),
                      "steered_over_unsteered": round(s / u, 3), "target": ">= 0.90"}), flush=True)
    scheduler.close()


if __name__ == "__main__":
    main()
