"""Why the model loads in a thread that ends (`steering.engine.loading.in_passing_thread`):
the forward-only decode at batch 8 (bench/targets.py's `forward_only`) run on a worker thread,
as a server's scheduler runs it, after the model was loaded on the main thread (which lives on,
keeping its OpenMP team) or on a thread that ended. Each case in a fresh process, alternating.

    OMP_NUM_THREADS=2 .venv/bin/python bench/omp_teams.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(case: str) -> float:
    import torch
    from types import SimpleNamespace

    from bench.targets import forward_only
    from steering.engine import loading

    if case == "main thread":
        loaded = loading._load_model("embedded", "cpu", "auto", None)  # bypasses the passing thread
        torch.ones(512, 512) @ torch.ones(512, 512)  # as any later parallel op on the main thread would
    else:
        loaded = loading.load_model("embedded", device="cpu", dtype="auto")
    model = SimpleNamespace(loaded=loaded)
    out = []

    def decode() -> None:  # the scheduler's thread
        forward_only(model, 8, steps=4)
        out.append(statistics.median(forward_only(model, 8) for _ in range(5)))

    worker = threading.Thread(target=decode)
    worker.start()
    worker.join()
    return out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT=" + json.dumps(measure(args.case)))
        return
    load_before, when = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, list[float]] = {"main thread": [], "passing thread": []}
    for _ in range(args.rounds):
        for case in results:
            out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            value = json.loads(out.stdout.split("RESULT=", 1)[1].splitlines()[0])
            results[case].append(round(value, 1))
            print(json.dumps({"loaded on": case, "decode_tokens_per_s_batch_8": round(value, 1)}), flush=True)
    main_thread, passing = (statistics.median(results[c]) for c in results)
    print(json.dumps({"settings": {"date": when, "dtype": "auto", "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                                   "cpus": os.cpu_count(), "rounds": args.rounds,
                                   "loadavg_before": [round(x, 2) for x in load_before],
                                   "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
                      "passing_over_main_thread": round(passing / main_thread, 3)}))


if __name__ == "__main__":
    main()
