"""Two experiments of "Steerable Chatbots" (Bo et al., 2025) on the embedded model.

Experiment 1: Effect against strength. Neutral questions answered at strengths from −1.5 to
+1.5 of each dimension's measured functional range (so ±1 is the range's edge and ±1.5 lies
beyond it); Effect should rise about linearly inside the range (R² of a straight line over
−1…+1) while perplexity stays near the unsteered one, and perplexity should climb beyond it.

Experiment 3: two dimensions at once. Strengths of two dimensions combine additively
(h ← h + d_a·v_a + d_b·v_b): over the 3 × 3 grid of (d_a, d_b) in {−1, 0, +1}, each
dimension's Effect should follow its own strength and barely move with the other's.

Every answer of an experiment is a row of one batch. Prints the tables, saves the plots
(paper-exp1.png, paper-exp3.png) and the figures (paper.json) under --out.

    .venv/bin/python examples/paper_reproduction.py [--dimensions cost,formality] [--pair cost,ambiance]
    .venv/bin/python examples/paper_reproduction.py --quick        # 2 prompts, short answers
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STRENGTHS = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)


def experiment_1(loaded, vectors, dimensions, prompts, params, embedder) -> dict:
    from steering.data import catalog
    from steering.engine.measures import pearson
    from steering.engine.sweep import evaluate_dimension

    results = {}
    print("\nExperiment 1: Effect against strength (user units: ±1 = the measured functional range)")
    print(f"{'dimension':<10} {'range':>6} " + " ".join(f"{s:>+7.1f}" for s in STRENGTHS) + "   R²(−1…1)  PPL×(±1.5)")
    for dim in dimensions:
        spec = catalog.dimension(dim)
        result = evaluate_dimension(
            loaded, vectors, dim, prompts, (spec["reference_positive"], spec["reference_negative"]),
            strengths=STRENGTHS, params=params, embedder=embedder,
        )
        inside = [p for p in result.points if abs(p.strength) <= 1.0]
        r2 = pearson([p.strength for p in inside], [p.effect for p in inside]) ** 2  # R² of a straight line
        beyond = max(result.at(1.5).ppl_ratio, result.at(-1.5).ppl_ratio)
        results[dim] = {"result": result, "r2": r2}
        effects = " ".join(f"{p.effect:>+7.3f}" for p in result.points)
        print(f"{dim:<10} {result.functional_range:>6g} {effects}   {r2:>8.2f}  {beyond:>9.2f}")
        print(f"{'':<10} {'PPL×':>6} " + " ".join(f"{p.ppl_ratio:>7.2f}" for p in result.points))
    return results


def experiment_3(loaded, vectors, pair, prompts, params, embedder) -> dict:
    from steering.data import catalog
    from steering.engine import SteeringHooks
    from steering.engine.measures import effect_scores
    from steering.engine.rows import generate_rows

    a, b = pair
    grid = [(sa, sb) for sa in (-1.0, 0.0, 1.0) for sb in (-1.0, 0.0, 1.0)]
    ids = [loaded.chat_ids(p) for p in prompts]
    rows = [(i, vectors.layer_deltas({a: sa, b: sb})) for sa, sb in grid for i in ids]
    with SteeringHooks(loaded.layers, vectors.layers) as hooks:
        answers = generate_rows(loaded, hooks, rows, params)
    n = len(ids)
    effects = {}
    for dim in pair:
        spec = catalog.dimension(dim)
        scores = effect_scores(embedder, answers, spec["reference_positive"], spec["reference_negative"])
        effects[dim] = {cell: sum(scores[k * n : (k + 1) * n]) / n for k, cell in enumerate(grid)}
    print(f"\nExperiment 3: {a} and {b} steered together (mean Effect; rows: {a} strength, columns: {b} strength)")
    for dim in pair:
        print(f"  Effect on {dim}:")
        print("  " + f"{a}\\{b}".rjust(16) + "".join(f"{sb:>+9.0f}" for sb in (-1, 0, 1)))
        for sa in (-1.0, 0.0, 1.0):
            print("  " + f"{sa:+.0f}".rjust(16) + "".join(f"{effects[dim][(sa, sb)]:>+9.3f}" for sb in (-1.0, 0.0, 1.0)))
    # Each dimension's own strength should move its Effect; the other's should matter less.
    summary = {}
    for dim, own, other in ((a, 0, 1), (b, 1, 0)):
        def mean_at(index, value):
            cells = [c for c in grid if c[index] == value]
            return sum(effects[dim][c] for c in cells) / len(cells)

        summary[dim] = {
            "own_swing": mean_at(own, 1.0) - mean_at(own, -1.0),
            "other_swing": mean_at(other, 1.0) - mean_at(other, -1.0),
        }
        print(f"  {dim}: Effect swing with its own strength {summary[dim]['own_swing']:+.3f}, "
              f"with {pair[other]}'s {summary[dim]['other_swing']:+.3f}")
    return {"grid": [list(c) for c in grid], "effects": {d: [effects[d][c] for c in grid] for d in pair},
            "summary": summary, "answers": answers}


def plot(exp1: dict, exp3: dict, pair, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for dim, item in exp1.items():
        points = item["result"].points
        left.plot([p.strength for p in points], [p.effect for p in points], marker="o", label=dim)
        right.plot([p.strength for p in points], [p.ppl_ratio for p in points], marker="o", label=dim)
    for axis in (left, right):
        axis.axvspan(-1, 1, color="grey", alpha=0.1)
        axis.set_xlabel("strength (±1 = functional range)")
    left.set(ylabel="Effect", title="Experiment 1: Effect")
    right.set(ylabel="PPL / unsteered PPL", title="perplexity", yscale="log")
    left.legend(fontsize=8)
    figure.savefig(out / "paper-exp1.png", dpi=100)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.6), constrained_layout=True)
    for axis, dim in zip(axes, pair):
        values = [[exp3["effects"][dim][3 * i + j] for j in range(3)] for i in range(3)]
        image = axis.imshow(values, origin="lower", cmap="coolwarm")
        axis.set(xticks=range(3), xticklabels=["−1", "0", "+1"], yticks=range(3), yticklabels=["−1", "0", "+1"],
                 xlabel=f"{pair[1]} strength", ylabel=f"{pair[0]} strength", title=f"Effect on {dim}")
        figure.colorbar(image, ax=axis)
    figure.savefig(out / "paper-exp3.png", dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description="Experiments 1 and 3 of the paper on the embedded model.")
    parser.add_argument("--dimensions", default="cost,formality", help="experiment 1 (comma-separated)")
    parser.add_argument("--pair", default="cost,ambiance", help="experiment 3: two dimensions")
    parser.add_argument("--method", default="caa", choices=["caa", "probe", "pca"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("paper-output"))
    parser.add_argument("--quick", action="store_true", help="2 prompts, 16 tokens")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.tokens = 2, 16
    args.out.mkdir(parents=True, exist_ok=True)
    dimensions = args.dimensions.split(",")
    pair = tuple(args.pair.split(","))
    if len(pair) != 2:
        parser.error("--pair takes two dimensions")

    from steering.data import catalog
    from steering.engine import GenerationParams, SteerableModel
    from steering.engine.embedding import shared_embedder
    from steering.engine.range_search import RANGE_PROMPTS, search_functional_range

    started = time.monotonic()
    model = SteerableModel.load()
    needed = list(dict.fromkeys([*dimensions, *pair]))
    vectors = model.compute_vectors({d: catalog.examples(d) for d in needed}, method=args.method)
    ranges = search_functional_range(model.loaded, vectors, catalog.range_prompts(RANGE_PROMPTS))
    vectors = vectors.with_ranges({d: r.functional_range for d, r in ranges.items()})
    print(f"{args.method} vectors for {', '.join(needed)}; functional ranges "
          f"{ {d: r.functional_range for d, r in ranges.items()} } ({time.monotonic() - started:.0f} s)")
    prompts = catalog.neutral_prompts()[: args.prompts]
    params = GenerationParams(max_new_tokens=args.tokens)
    embedder = shared_embedder()
    exp1 = experiment_1(model.loaded, vectors, dimensions, prompts, params, embedder)
    exp3 = experiment_3(model.loaded, vectors, pair, prompts, params, embedder)
    plot(exp1, exp3, pair, args.out)
    figures = {
        "method": args.method,
        "functional_range": {d: r.functional_range for d, r in ranges.items()},
        "experiment_1": {d: {"r2_inside": item["r2"], **item["result"].to_dict()} for d, item in exp1.items()},
        "experiment_3": exp3,
    }
    (args.out / "paper.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False, default=str))
    print(f"\nWrote {args.out}/paper-exp1.png, paper-exp3.png and paper.json in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
