"""The readout's cost and its agreement with the embedding-based Effect, on the embedded model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/readout.py [--batch 8] [--tokens 48] [--repeats 5]
                                                        [--limit 8] [--vectors FILE] [--dtype bfloat16]

(a) Cost. One batch of --batch rows, each with its own steering (every dimension, strengths
spread over −1…1), generated with and without the readout, alternately (which goes first
alternates too), --repeats times each; the cost is the median over repeats of the on/off ratio
of a back-to-back pair. Both clocks are printed: wall-clock tokens/s, and tokens per CPU second
of the generating thread (with OMP_NUM_THREADS=1 the model runs on it), which a shared
machine's other processes disturb far less. The same for an unsteered batch, where the readout is the only thing the
hooks do. The forward-only limit is the model's own forward passes over the same shapes (KV
cache, greedy feed, hooks idle, no sampling, no detokenizing): what no decode loop can beat.
End-of-turn stops are off so every run generates exactly --tokens tokens per row.

(b) Agreement. Per dimension, the held-out split's first --limit suggestion prompts and its own
on-topic prompts (as bench/heldout.py evaluates), answered greedily at strengths −1, −0.5, 0,
0.5, 1 in one batch with the readout on. Printed: Spearman ρ of the mean readout with strength
over the five strengths, the same for the mean Effect (measures.effect_scores against the
held-out reference texts), and over all answers ρ of each answer's readout with its Effect.

Vectors: --vectors FILE when it exists (its readout ends are computed here if it has none),
else computed from the shipped examples in float32 as the platform does (compute_vectors;
the functional-range search is skipped: every dimension gets the default range) and saved
there. Answers and throughput use --dtype (bfloat16: as served on this CPU).
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
from steering.engine import GenerationParams, GenerationRequest, SteerableModel, SteeringVectors  # noqa: E402
from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.extraction import pad_left  # noqa: E402
from steering.engine.measures import effect_scores, spearman  # noqa: E402
from steering.engine.hooks import RowSteering  # noqa: E402
from steering.engine.extraction import calibrate_readout  # noqa: E402
from steering.engine.readout import BatchReadout, probe_for  # noqa: E402

STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
PROMPTS = catalog.neutral_prompts()


def vectors_for(path: Path) -> SteeringVectors:
    examples = {name: catalog.examples(name) for name in catalog.dimension_names()}
    if path.exists():
        vectors = SteeringVectors.load(path)
        if set(vectors.readout) >= set(vectors.dimensions):
            return vectors
        vectors = calibrate_readout(SteerableModel.load(dtype=torch.float32).loaded, vectors, examples)
    else:
        vectors = SteerableModel.load(dtype=torch.float32).compute_vectors(examples)
    vectors.save(path)
    return vectors


def batch_requests(model: SteerableModel, vectors: SteeringVectors, size: int, tokens: int, *, steered: bool,
                   readout: bool) -> list[GenerationRequest]:
    probe = probe_for(vectors) if readout else None
    dims = vectors.dimensions
    requests = []
    for i in range(size):
        # Row i: every dimension at its own strength, spread over −1…1, so no two rows steer alike.
        prefs = {d: round(((i + 3 * k) % (2 * size + 1)) / size - 1, 3) for k, d in enumerate(dims)} if steered else {}
        requests.append(GenerationRequest(
            prompt_ids=model.loaded.chat_ids(PROMPTS[i % len(PROMPTS)]), params=GenerationParams(max_new_tokens=tokens),
            steering=vectors.layer_deltas(prefs), readout=probe,
        ))
    return requests


def tokens_per_s(model: SteerableModel, requests: list[GenerationRequest]) -> tuple[float, float]:
    """(tokens per wall-clock second, tokens per CPU second of this thread). With one torch
    thread the model runs on this thread, so the second is what the work costs, whatever other
    processes do to the wall clock of a shared machine."""
    start, cpu = time.perf_counter(), time.thread_time()
    tokens = sum(1 for event in model.stream_requests(requests) if event.token_id is not None)
    return tokens / (time.perf_counter() - start), tokens / (time.thread_time() - cpu)


@torch.inference_mode()
def forward_only(model: SteerableModel, requests: list[GenerationRequest], tokens: int) -> tuple[float, float]:
    loaded = model.loaded
    input_ids, mask, positions = pad_left([r.prompt_ids for r in requests], loaded.pad_id, loaded.device)
    start, cpu = time.perf_counter(), time.thread_time()
    out = loaded.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
    nxt, cache, position = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values, positions[:, -1:] + 1
    for _ in range(tokens - 1):
        mask = torch.cat([mask, mask.new_ones(len(requests), 1)], dim=1)
        out = loaded.model(input_ids=nxt, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True)
        nxt, cache, position = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values, position + 1
    done = len(requests) * tokens
    return done / (time.perf_counter() - start), done / (time.thread_time() - cpu)


def cost(model: SteerableModel, vectors: SteeringVectors, args) -> dict:
    stops, model.loaded.stop_ids = model.loaded.stop_ids, frozenset()  # fixed-length runs
    try:
        return _cost(model, vectors, args)
    finally:
        model.loaded.stop_ids = stops


def readout_work_us(model: SteerableModel, vectors: SteeringVectors, rows: int, steps: int = 2000) -> float:
    """Microseconds of the readout's own work per decode step of `rows` steered rows (its
    observers on one step's hidden states, then the readings), timed alone on the thread's
    CPU clock: what the on/off runs measure through a shared machine's noise."""
    requests = batch_requests(model, vectors, rows, 1, steered=True, readout=True)
    steering = RowSteering.from_rows([r.steering for r in requests], dtype=model.loaded.dtype, device=model.loaded.device)
    meter = BatchReadout([r.readout for r in requests], steering.deltas)
    hidden = torch.randn(rows, 1, vectors.hidden_size, dtype=model.loaded.dtype)
    observers = meter.observers()
    start = time.thread_time()
    for _ in range(steps):
        for observe in observers.values():
            observe(hidden)
        meter.readings()
    return (time.thread_time() - start) / steps * 1e6


def _cost(model: SteerableModel, vectors: SteeringVectors, args) -> dict:
    figures = {"readout_work_us_per_step": round(readout_work_us(model, vectors, args.batch), 1)}
    for steered in (True, False):
        make = lambda readout: batch_requests(model, vectors, args.batch, args.tokens, steered=steered, readout=readout)  # noqa: E731
        tokens_per_s(model, make(True))  # warm-up
        runs = {False: [], True: []}
        for repeat in range(args.repeats):
            for readout in ((False, True) if repeat % 2 == 0 else (True, False)):
                runs[readout].append(tokens_per_s(model, make(readout)))
        figure = {}
        for clock, i in (("wall", 0), ("cpu", 1)):
            off, on = statistics.median(r[i] for r in runs[False]), statistics.median(r[i] for r in runs[True])
            # Each repeat's on/off pair ran back to back: the median of their ratios resists drift.
            pairs = statistics.median(a[i] / b[i] for a, b in zip(runs[True], runs[False]))
            figure[clock] = {
                "tokens_per_s_readout_off": round(off, 1), "tokens_per_s_readout_on": round(on, 1),
                "on_over_off": round(on / off, 4), "median_pair_ratio": round(pairs, 4),
                "cost_percent": round(100 * (1 - pairs), 2),
                "runs_off": [round(r[i], 1) for r in runs[False]], "runs_on": [round(r[i], 1) for r in runs[True]],
            }
        figures["steered" if steered else "unsteered"] = figure
    plain = batch_requests(model, vectors, args.batch, args.tokens, steered=False, readout=False)
    limits = [forward_only(model, plain, args.tokens) for _ in range(args.repeats)]
    figures["forward_only_tokens_per_s"] = {"wall": round(statistics.median(x[0] for x in limits), 1),
                                            "cpu": round(statistics.median(x[1] for x in limits), 1)}
    return figures


def agreement(model: SteerableModel, vectors: SteeringVectors, args) -> dict:
    probe, embedder, split = probe_for(vectors), shared_embedder(), catalog.heldout()
    figures = {}
    for name in args.dimensions.split(","):
        column = probe.dimensions.index(name)
        prompts = split["prompts"][: args.limit] + split["on_topic"][name]
        rows = [(p, s) for s in STRENGTHS for p in prompts]
        requests = [
            GenerationRequest(prompt_ids=model.loaded.chat_ids(p), params=GenerationParams(max_new_tokens=args.effect_tokens),
                              steering=vectors.layer_deltas({name: s}), readout=probe)
            for p, s in rows
        ]
        texts, readings = [""] * len(rows), [[] for _ in rows]
        for event in model.stream_requests(requests):
            texts[event.index] += event.text
            if event.readout is not None:
                readings[event.index].append(event.readout[column])
        reads = [statistics.mean(r) if r else 0.0 for r in readings]
        effects = effect_scores(embedder, texts, *catalog.heldout_references(name))
        by = lambda values, s: statistics.mean(v for v, (_, t) in zip(values, rows) if t == s)  # noqa: E731
        mean_reads, mean_effects = [by(reads, s) for s in STRENGTHS], [by(effects, s) for s in STRENGTHS]
        figures[name] = {
            "readout_means": [round(x, 3) for x in mean_reads], "effect_means": [round(x, 4) for x in mean_effects],
            "rho_readout_strength": round(spearman(STRENGTHS, mean_reads), 3),
            "rho_effect_strength": round(spearman(STRENGTHS, mean_effects), 3),
            "rho_readout_effect_answers": round(spearman(reads, effects), 3),
            "rho_readout_strength_answers": round(spearman(reads, [s for _, s in rows]), 3),
            "answers": len(rows), "read_layer": vectors.readout[name].layer,
        }
        print(json.dumps({"dimension": name, **figures[name]}), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48, help="tokens per row in the cost runs")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--limit", type=int, default=8, help="held-out suggestion prompts per strength")
    parser.add_argument("--effect-tokens", type=int, default=48)
    parser.add_argument("--dimensions", default=",".join(catalog.dimension_names()))
    parser.add_argument("--vectors", default="/tmp/steerlab-readout-vectors.safetensors")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--skip", choices=["cost", "agreement"], default=None)
    args = parser.parse_args()

    vectors = vectors_for(Path(args.vectors))
    model = SteerableModel.load(dtype=args.dtype)
    model.add_vectors(vectors, "bench")
    print(json.dumps({"settings": {
        "model": model.loaded.model_id, "dtype": args.dtype, "device": str(model.loaded.device),
        "threads": torch.get_num_threads(), "batch": args.batch, "tokens": args.tokens, "repeats": args.repeats,
        "layers_steered": vectors.layers, "read_layers": {d: e.layer for d, e in vectors.readout.items()},
        "ranges": vectors.functional_range, "limit": args.limit, "effect_tokens": args.effect_tokens,
    }}), flush=True)
    if args.skip != "cost":
        print(json.dumps({"cost": cost(model, vectors, args)}), flush=True)
    if args.skip != "agreement":
        figures = agreement(model, vectors, args)
        print(json.dumps({"agreement_summary": {
            "rho_readout_strength": {d: f["rho_readout_strength"] for d, f in figures.items()},
            "rho_effect_strength": {d: f["rho_effect_strength"] for d, f in figures.items()},
            "rho_readout_effect_answers": {d: f["rho_readout_effect_answers"] for d, f in figures.items()},
        }}), flush=True)


if __name__ == "__main__":
    main()
