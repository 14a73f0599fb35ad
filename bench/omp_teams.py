"""Why the model loads in a thread that ends (`steering.engine.loading.in_passing_thread`) and
why an engine's thread claims the cores (`loading.claim_cores`): the forward-only decode at
batch 8 (bench/targets.py's `forward_only`) run on a worker thread, as a server's scheduler
runs it,
- after the model was loaded on the main thread (which lives on, keeping its OpenMP team) or
  on a thread that ended;
- after the model was loaded on a thread that ended, while another thread that lives on (a
  request's) embeds a feedback text with the sentence embedder, the decoding thread having
  claimed the cores first or not.
Each case in a fresh process, alternating.

    OMP_NUM_THREADS=2 .venv/bin/python bench/omp_teams.py [--rounds 2] [--cases loading|requests|all]
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
    side = RequestThread() if case.startswith("embedding") else None

    def decode() -> None:  # the scheduler's thread
        if case == "embedding thread, claimed":
            loading.claim_cores()  # as the schedulers' threads do when they start
        if side is not None:
            side.embed_once()  # after the engine started, as a request embeds a feedback text
        forward_only(model, 8, steps=4)
        out.append(statistics.median(forward_only(model, 8) for _ in range(5)))

    worker = threading.Thread(target=decode)
    worker.start()
    worker.join()
    if side is not None:
        side.stop()
    return out[0]


class RequestThread:
    """A thread that lives on, as a server's request threads do, and embeds one text when told."""

    def __init__(self) -> None:
        from steering.engine import loading
        from steering.engine.embedding import shared_embedder

        self.embedder = loading.in_passing_thread(shared_embedder)  # loaded where no team stays behind
        self._go, self._done, self._end = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self._go.wait()
        self.embedder.embed(["The answer was far too formal for me, please keep it casual."])
        self._done.set()
        self._end.wait()

    def embed_once(self) -> None:
        self._go.set()
        self._done.wait()

    def stop(self) -> None:
        self._end.set()
        self.thread.join()


CASES = {"loading": ("main thread", "passing thread"),
         "requests": ("embedding thread, unclaimed", "embedding thread, claimed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", choices=[*CASES, "all"], default="all")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT=" + json.dumps(measure(args.case)))
        return
    load_before, when = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    chosen = [c for key, cases in CASES.items() if args.cases in (key, "all") for c in cases]
    results: dict[str, list[float]] = {case: [] for case in chosen}
    for _ in range(args.rounds):
        for case in results:
            out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            value = json.loads(out.stdout.split("RESULT=", 1)[1].splitlines()[0])
            results[case].append(round(value, 1))
            print(json.dumps({"case": case, "decode_tokens_per_s_batch_8": round(value, 1)}), flush=True)
    median = {case: statistics.median(values) for case, values in results.items()}
    ratios = {}
    if "passing thread" in median:
        ratios["passing_over_main_thread"] = round(median["passing thread"] / median["main thread"], 3)
    if "embedding thread, claimed" in median:
        ratios["claimed_over_unclaimed"] = round(
            median["embedding thread, claimed"] / median["embedding thread, unclaimed"], 3)
    print(json.dumps({"settings": {"date": when, "dtype": "auto", "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                                   "cpus": os.cpu_count(), "rounds": args.rounds,
                                   "loadavg_before": [round(x, 2) for x in load_before],
                                   "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
                      **ratios}))


if __name__ == "__main__":
    main()
