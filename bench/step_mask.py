"""A decode step's cost with the padding mask kept (steering/engine/stepmask.py) and with it
rebuilt by transformers at every step, beside bare forward passes (bench/targets.py's loop):
8 rows with 8 formality strengths in the served dtype (bf16 where native), 32 steps per
measurement, the three interleaved over 7 rounds so a shared machine's load weighs on all
alike; medians, in CPU time of this process and in wall time.

    OMP_NUM_THREADS=2 .venv/bin/python bench/step_mask.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from steering.data import catalog  # noqa: E402
from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteeringHooks, compute_vectors, load_model  # noqa: E402

STEPS, ROUNDS, ROWS = 32, 7, 8


def timed(fn) -> tuple[float, float]:
    """(CPU, wall) seconds per step of `fn`, which runs STEPS steps."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return (time.process_time() - cpu) / STEPS, (time.perf_counter() - wall) / STEPS


def main() -> None:
    loaded = load_model("embedded", dtype="auto")
    loaded.stop_ids = frozenset()
    prompts = catalog.neutral_prompts()
    positive, negative = catalog.examples("formality")
    vectors = compute_vectors(loaded, {"formality": (positive[:16], negative[:16])})
    hooks = SteeringHooks(loaded.layers, vectors.layers)

    @torch.inference_mode()
    def bare() -> tuple[float, float]:
        ids = torch.tensor([loaded.chat_ids(prompts[0])[:38]] * ROWS)
        out = loaded.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        state = {"cache": out.past_key_values, "token": out.logits[:, -1].argmax(-1, keepdim=True)}

        def steps() -> None:
            for _ in range(STEPS):
                out = loaded.model(input_ids=state["token"], past_key_values=state["cache"], use_cache=True)
                state["cache"], state["token"] = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

        return timed(steps)

    def engine(kept: bool) -> tuple[float, float]:
        requests = [
            GenerationRequest(prompt_ids=loaded.chat_ids(prompts[i]), params=GenerationParams(max_new_tokens=STEPS + 8),
                              steering=vectors.layer_deltas({"formality": -1 + 2 * i / (ROWS - 1)}))
            for i in range(ROWS)
        ]
        batch = DecodeBatch(loaded, hooks, requests)
        batch._decode_mask = kept  # False: the 2D mask, which transformers turns into 4D every step
        batch.step()  # the prefill
        return timed(lambda: [batch.step() for _ in range(STEPS)])

    bare(), engine(True), engine(False)  # warm-up
    runs = {"forward only": [], "mask kept": [], "mask rebuilt": []}
    for _ in range(ROUNDS):
        runs["forward only"].append(bare())
        runs["mask kept"].append(engine(True))
        runs["mask rebuilt"].append(engine(False))
    for clock, index in (("cpu", 0), ("wall", 1)):
        ms = {name: 1000 * statistics.median(r[index] for r in values) for name, values in runs.items()}
        print(f"{clock} ms per decode step, {ROWS} rows: " + ", ".join(f"{name} {value:.1f}" for name, value in ms.items())
              + f"; kept / rebuilt {ms['mask kept'] / ms['mask rebuilt']:.3f}")


if __name__ == "__main__":
    main()
