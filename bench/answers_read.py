"""What a reader sees in `bench/heldout.py --answers` files, in absolute terms: per strength
(−1, 0, +1), over every dimension's answers, the mean MiniLM cosine of an answer to its
question, how many refuse, and how many are degenerate. The held-out targets are ratios to the
unsteered answers; this compares framings whose unsteered answers differ.

    .venv/bin/python bench/answers_read.py /tmp/ho4/template-answers.json /tmp/ho4/sys-answers.json

"Refuse" is SmolLM2's refusal wording ("I'm sorry … as a chatbot … I don't have the
capability"), matched by the pattern below: a reading aid for this model, not a measure of
the platform."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steering.engine.embedding import shared_embedder  # noqa: E402
from steering.engine.measures import is_degenerate, prompt_similarities  # noqa: E402

REFUSAL = re.compile(
    r"I'm sorry|as a (chatbot|helpful|AI|text-based|language)|I can't|I don't have the (ability|capability)|I cannot|unable to",
    re.IGNORECASE,
)
STRENGTHS = ("-1.0", "0.0", "1.0")


def read(path: str, embedder) -> dict:
    answers = json.loads(Path(path).read_text())
    figures = {}
    for strength in STRENGTHS:
        prompts, texts = [], []
        for name, per_dimension in answers.items():
            if name == "together":
                continue
            prompts += per_dimension["prompts"]
            texts += per_dimension[strength]
        cosines = prompt_similarities(embedder, prompts, texts)
        figures[strength] = {
            "answers": len(texts),
            "cosine_to_question": round(sum(cosines) / len(cosines), 3),
            "refuse": sum(bool(REFUSAL.search(t)) for t in texts),
            "degenerate": sum(map(is_degenerate, texts)),
        }
    return figures


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    embedder = shared_embedder()
    for path in sys.argv[1:]:
        print(json.dumps({"answers": path, **read(path, embedder)}), flush=True)


if __name__ == "__main__":
    main()
