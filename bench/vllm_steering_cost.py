"""What per-request steering costs inside vLLM, in one process: 8 requests unsteered vs the
same 8 with 8 different steerings (layers 7–21), through `VllmScheduler`, interleaved rounds.
The in-process link between vLLM's own `LLM.generate` and the served engine
(bench/vllm_serving.py): what the scheduler and the steering cost before daphne and the
websocket do.

    OMP_NUM_THREADS=2 .venv-vllm/bin/python bench/vllm_steering_cost.py [--tokens 64] [--rounds 5] [--dtype auto]
        [--stops]

In --dtype (default what the site serves: `auto`, bfloat16 on a CPU with native bf16), eager,
the embedded model, greedy with the sampling the chat asks vLLM for (CHAT_DEFAULTS' top_p and
repetition penalty, as bench/vllm_serving.py's own run); end-of-turn stops off unless --stops
(every request then runs --tokens: equal work in both arms). The model and vLLM's engine are
built on a thread that ends (`loading.in_passing_thread`), as the site's warm-up builds them, so
that no OpenMP team but the scheduler's is left (docs/benchmarks.md, "Two OpenMP teams": built
on the main thread, every figure here came out about a third lower). Prints one JSON line per
round and the medians' ratio (target ≥ 0.90), with the settings and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from bench.chat_load import PROMPTS  # noqa: E402
from steering.engine import GenerationRequest, load_model  # noqa: E402
from steering.engine.loading import in_passing_thread  # noqa: E402
from steering.engine.request import CHAT_DEFAULTS  # noqa: E402
from steering.vllm_inference.engine import VllmScheduler  # noqa: E402
from steering.vllm_inference.weights import vllm_model_dir  # noqa: E402


def build(dtype: str):
    loaded = load_model("embedded", device="cpu", dtype=dtype)
    name = str(loaded.dtype).removeprefix("torch.")
    scheduler = VllmScheduler(loaded, vllm_model_dir(loaded, "embedded", ROOT / "var/vllm-models"), max_batch=16,
                              max_per_user=None, steered_rows=16, eager=True, dtype=name)
    generator = torch.Generator().manual_seed(0)
    steerings = []
    for _ in range(8):
        direction = torch.randn(loaded.hidden_size, generator=generator)
        steerings.append({layer: direction / direction.norm() * 2.0 for layer in range(7, 22)})
    return loaded, scheduler, steerings, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--stops", action="store_true", help="keep the end-of-turn stops (unequal work per arm)")
    args = parser.parse_args()
    loaded, scheduler, steerings, dtype = in_passing_thread(build, args.dtype)
    if not args.stops:
        loaded.stop_ids = frozenset()  # every request runs --tokens: equal work in both arms
    params = replace(CHAT_DEFAULTS, temperature=0.0, max_new_tokens=args.tokens)
    prompts = [loaded.chat_ids(PROMPTS[i]) for i in range(8)]

    def arm(steered: bool) -> float:
        requests = [GenerationRequest(prompt_ids=prompts[i], params=params, steering=steerings[i] if steered else {})
                    for i in range(8)]
        start = time.perf_counter()
        tickets = [scheduler.submit(r) for r in requests]
        for t in tickets:
            t.wait()
        return sum(t.tokens for t in tickets) / (time.perf_counter() - start)

    load_before = os.getloadavg()
    arm(False), arm(True)  # warm-up: first-use costs of both arms
    rates = {"unsteered": [], "steered": []}
    for i in range(args.rounds):
        for name in (("unsteered", "steered") if i % 2 == 0 else ("steered", "unsteered")):
            rates[name].append(arm(name == "steered"))
        print(json.dumps({"round": i, **{k: round(v[-1], 1) for k, v in rates.items()}}), flush=True)
    u, s = statistics.median(rates["unsteered"]), statistics.median(rates["steered"])
    print(json.dumps({"settings": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tokens": args.tokens,
                                   "rounds": args.rounds, "dtype": dtype, "eager": True, "stops": args.stops,
                                   "sampling": "greedy, top_p 0.9, repetition penalty 1.1 (the chat's)",
                                   "omp_threads": os.environ["OMP_NUM_THREADS"], "cpus": os.cpu_count(),
                                   "loadavg_before": [round(x, 2) for x in load_before],
                                   "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
                      "unsteered_8_tok_s": round(u, 1), "steered_8_tok_s": round(s, 1),
                      "steered_over_unsteered": round(s / u, 3), "target": ">= 0.90"}), flush=True)
    scheduler.close()


if __name__ == "__main__":
    main()
