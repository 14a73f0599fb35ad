"""The default dimensions on the held-out split, straight on the engine (no database): how
clearly each steers, beside plain prompting and prompting + steering. One JSON line per
dimension, with the settings it ran under; then the evaluation targets (docs/evaluation.md) checked.

    .venv/bin/python bench/heldout.py [--method caa] [--limit 12] [--tokens 48] [--vectors FILE]
                                      [--dtype float32|bfloat16]

Vectors are computed as the platform computes a vector set (`compute_vectors` from the
shipped pairs, then the functional-range search on the neutral prompts under the shipped
settings) and saved to --vectors; an existing file is reused only when its recorded data
fingerprint and options are those of this run. Extraction and the range search never see
the held-out prompts or reference texts (steering/data/heldout.json).

--dtype is the dtype the answers are generated and scored in (float32 by default). Vectors
are computed in float32 only: with another dtype the run reuses the float32 run's --vectors
file and stops if there is none, so a bfloat16 table compares the serving dtype on the same
vectors (extracted in bf16 instead, they differ by cosine >= 0.9999: docs/benchmarks.md).

Targets per dimension: Spearman ρ of the mean Effect with strength = 1.0 over the five
strengths, Effect(+1) − Effect(−1) ≥ 0.12, PNE > 0 at +1 and < 0 at −1, perplexity ratio ≤ 3
at ±1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.data import catalog  # noqa: E402
from steering.engine import GenerationParams, SteerableModel, SteeringVectors  # noqa: E402
from steering.engine.prompting import preference_instruction  # noqa: E402
from steering.engine.sweep import MAX_PPL_RATIO, RANGE_PROMPTS, evaluate_dimension, search_functional_range  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def data_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "steering/data/dimensions").glob("*.json")) + [ROOT / "steering/data/prompts/neutral.json"]:
        digest.update(path.read_bytes())
    # The engine's code, but for the prompting baseline's wording (it never touches vectors).
    for path in sorted((ROOT / "steering/engine").glob("*.py")):
        if path.name != "prompting.py":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def vectors_for(model: SteerableModel, args, options: dict) -> SteeringVectors:
    path, recorded_at = Path(args.vectors), Path(args.vectors).with_suffix(".options.json")
    if path.exists():
        recorded = json.loads(recorded_at.read_text()) if recorded_at.exists() else None
        if recorded == options:
            return SteeringVectors.load(path)
    if args.dtype != "float32":
        sys.exit(f"{path}: no vectors computed under these options; run once with --dtype float32 first")
    if path.exists():
        print(json.dumps({"note": f"{path} was computed under other options; recomputing", "was": recorded}), flush=True)
    started = time.monotonic()
    examples = {name: catalog.examples(name) for name in catalog.dimension_names()}
    vectors = model.compute_vectors(examples, method=args.method, read=args.read,
                                    **({"layers": args.layers} if args.layers else {}))
    found = search_functional_range(model.loaded, vectors, catalog.range_prompts(args.range_prompts),
                                    max_ppl_ratio=MAX_PPL_RATIO, hooks=model.hooks)
    vectors = vectors.with_ranges({dim: r.functional_range for dim, r in found.items()})
    print(json.dumps({"vectors_seconds": round(time.monotonic() - started), "ranges": {
        dim: {"range": r.functional_range, "ratios": {str(c): round(x, 2) for c, x in r.ratios.items()}}
        for dim, r in found.items()}}), flush=True)
    vectors.save(path)
    recorded_at.write_text(json.dumps(options))
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="caa", choices=["caa", "probe", "pca"])
    parser.add_argument("--read", default="mean")
    parser.add_argument("--layers", type=lambda t: [int(x) for x in t.split(",")], default=None)
    parser.add_argument("--range-prompts", type=int, default=RANGE_PROMPTS)
    parser.add_argument("--limit", type=int, default=12, help="held-out prompts per strength")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dimensions", default=",".join(catalog.dimension_names()))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--vectors", default="/tmp/steerlab-heldout-vectors.safetensors")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    model = SteerableModel.load(dtype=args.dtype)
    options = {"method": args.method, "read": args.read, "layers": args.layers,
               "range_prompts": args.range_prompts, "data_and_engine": data_fingerprint()}
    vectors = model.add_vectors(vectors_for(model, args, options))
    prompts = catalog.heldout()["prompts"][: args.limit]
    settings = {**options, "dtype": args.dtype, "split": "heldout", "prompts": len(prompts), "tokens": args.tokens,
                "strengths": list(STRENGTHS), "baselines": not args.no_baselines, "layers_steered": list(vectors.layers)}
    print(json.dumps({"settings": settings}), flush=True)
    verdicts = {}
    for name in args.dimensions.split(","):
        spec = catalog.dimension(name)

        def instructions(strength, spec=spec):
            return preference_instruction(spec["prompt_positive"], spec["prompt_negative"], strength)

        result = evaluate_dimension(
            model.loaded, vectors, name, prompts, catalog.heldout_references(name), strengths=STRENGTHS,
            hooks=model.hooks, params=GenerationParams(max_new_tokens=args.tokens),
            instructions=None if args.no_baselines else instructions,
        )
        rows = {"steering": (result.points, result.spearman_of_means, result.spearman)}
        rows.update({k: (b.points, b.spearman_of_means, b.spearman) for k, b in result.baselines.items()})
        line = {"dimension": name, "range": vectors.functional_range[name], "seconds": result.seconds}
        for kind, (points, rho_means, rho) in rows.items():
            at = {p.strength: p for p in points}
            figures = {
                "effects": [round(p.effect, 4) for p in points],
                "rho_means": round(rho_means, 3), "rho_answers": round(rho, 3),
                "spread": round(at[1.0].effect - at[-1.0].effect, 4),
                "pne": [round(at[-1.0].pne, 4), round(at[1.0].pne, 4)],
                "ppl_ratio": [round(at[-1.0].ppl_ratio, 2), round(at[1.0].ppl_ratio, 2)],
            }
            figures["targets_met"] = {
                "rho": figures["rho_means"] >= 0.999, "spread": figures["spread"] >= 0.12,
                "pne": figures["pne"][1] > 0 > figures["pne"][0], "ppl": max(figures["ppl_ratio"]) <= 3.0,
            }
            line[kind] = figures
        verdicts[name] = line["steering"]["targets_met"]
        print(json.dumps(line), flush=True)
        print(json.dumps({"answers": name, **{str(p.strength): p.answers[0] for p in result.points}}), flush=True)
    print(json.dumps({"targets_met": verdicts}), flush=True)


if __name__ == "__main__":
    main()
