"""The seed's complete workflow on the embedded model (SmolLM2-135M-Instruct), in one script:

1. data: training examples for a dimension, as the files `create_template` writes;
2. vectors: extracted with the engine, and the functional range measured;
3. steered against unsteered answers, generated in one batch;
4. the same through the REST API (token auth, POST /api/chat/) of a throwaway site;
5. evaluation: `manage.py evaluate_steering`, a JSON report and a PNG plot.

    .venv/bin/python examples/basic_steering_example.py [--dimension formality] [--out example-output]
    .venv/bin/python examples/basic_steering_example.py --quick     # fewer examples and tokens

Nothing touches the site's own database or media folder: the REST part runs on a SQLite file
and a media folder under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "What should I cook for dinner tonight?"


def step(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="SteerLab's workflow end to end on the embedded model.")
    parser.add_argument("--dimension", default="formality", help="a shipped dimension")
    parser.add_argument("--out", type=Path, default=Path("example-output"))
    parser.add_argument("--quick", action="store_true", help="20 examples a side, short answers, 3 evaluation prompts")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tokens = 24 if args.quick else 60

    # The REST part needs Django; configured before anything imports it.
    os.environ.setdefault("DEBUG", "1")
    os.environ["DATABASE_URL"] = f"sqlite:///{out}/example.sqlite3"
    os.environ["MEDIA_ROOT"] = str(out / "media")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")

    from steering.data import catalog
    from steering.engine import SteerableModel
    from steering.engine.range_search import RANGE_PROMPTS, search_functional_range

    step("1. Data")
    positive, negative = catalog.examples(args.dimension)
    if args.quick:
        positive, negative = positive[:20], negative[:20]
    spec = catalog.dimension(args.dimension)
    for end, texts in (("positive", positive), ("negative", negative)):
        (out / f"{args.dimension}_{end}.json").write_text(json.dumps(texts, indent=1, ensure_ascii=False))
    print(f"{args.dimension}: {spec['negative_label']} ↔ {spec['positive_label']}, {len(positive)} examples a side "
          f"(written to {out}/{args.dimension}_{{positive,negative}}.json)")
    print(f"  + {positive[0]}\n  − {negative[0]}")

    step("2. Steering vectors")
    started = time.monotonic()
    model = SteerableModel.load()
    vectors = model.compute_vectors({args.dimension: (positive, negative)}, labels={
        args.dimension: [spec["negative_label"], spec["positive_label"]]})
    search = search_functional_range(model.loaded, vectors, catalog.range_prompts(RANGE_PROMPTS))[args.dimension]
    vectors = vectors.with_ranges({args.dimension: search.functional_range})
    path = vectors.save(out / f"{args.dimension}.safetensors")
    print(f"method {vectors.method}, layers {vectors.layers[0]}–{vectors.layers[-1]}, "
          f"functional range {search.functional_range} (perplexity ratios {dict((c, round(r, 2)) for c, r in search.ratios.items())}) "
          f"in {time.monotonic() - started:.0f} s → {path.name}")

    step("3. Steered and unsteered answers (one batch)")
    model.add_vectors(vectors)
    strengths = (-1.0, 0.0, 1.0)
    answers = model.generate_batch(
        [{"prompt": PROMPT, "preferences": {args.dimension: s}, "max_new_tokens": tokens} for s in strengths]
    )
    print(f"Prompt: {PROMPT}")
    for strength, answer in zip(strengths, answers):
        print(f"  {strength:+.0f}: {answer.strip()}")

    step("4. The same through the REST API")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from steering.services import vector_sets

    call_command("migrate", verbosity=0)
    vector_sets.dimension_import_default(name=args.dimension)  # with its reference texts, for step 5
    vector_set = vector_sets.vector_set_register(vectors=vectors, name=f"example {args.dimension}")
    user, _ = get_user_model().objects.get_or_create(username="example")
    user.set_password("example-password")
    user.save()
    client = Client(SERVER_NAME="localhost")
    token = client.post(
        "/api/auth/token/", {"username": "example", "password": "example-password"}, content_type="application/json"
    ).json()["token"]
    for strength in strengths:
        response = client.post(
            "/api/chat/",
            # Greedy, as in step 3: the chat's default sampling would vary the answers by itself.
            {"prompt": PROMPT, "preferences": {args.dimension: strength}, "max_length": tokens,
             "vector_set": vector_set.pk, "temperature": 0},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        body = response.json()
        assert response.status_code == 200, body
        print(f"  POST /api/chat/ {args.dimension}={strength:+.0f} → {body['tokens']} tokens in {body['latency_ms']} ms: "
              f"{body['generated_text'].strip()}")

    step("5. Evaluation")
    call_command(
        "evaluate_steering", vector_set=vector_set.pk, dimension=args.dimension,
        limit=3 if args.quick else 8, max_new_tokens=24 if args.quick else 40,
        output=str(out / f"evaluation-{args.dimension}.json"),
    )


if __name__ == "__main__":
    main()
