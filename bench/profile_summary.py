"""Where the time goes, from a py-spy profile in its raw (collapsed stacks) format.

    py-spy record --format raw -o profile.txt -- .venv/bin/python …    (or --pid of a server)
    .venv/bin/python bench/profile_summary.py profile.txt [--within DecodeBatch.step]

Each sample is put in the first bucket whose pattern its stack matches, most specific first
(a steering hook runs inside the model's forward, so "steering hooks" is tried before
"model forward"); the buckets are the engine's per-step costs the issue names. Prints one
JSON line: the share of samples per bucket, of all samples (of those within a pattern with
--within). py-spy leaves idle threads out unless given --idle.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter

# (bucket, pattern searched in the whole stack), in order of precedence.
BUCKETS = [
    ("model loading", r"from_pretrained|load_gguf|gguf/"),
    ("vector extraction", r"record_activations"),
    # py-spy writes each frame as "qualname (file:line)"
    ("steering hooks", r"\(steering/engine/hooks\.py:"),
    ("steering assembly", r"from_rows \(|_joined_steering \(|RowSteering\.select|select \(steering/engine/hooks"),
    ("cache merge and padding", r"\(steering/engine/kvcache\.py:|\(transformers/cache_utils\.py:|merge \(steering/engine|\(steering/engine/cache_merge\.py:|_drop_shared_padding|batch_select_indices|_cancelled_while_prefilling"),
    ("attention mask building", r"create_causal_mask|sdpa_mask|_preprocess_mask_arguments"),
    ("model forward", r"_forward \(steering/engine/generation\.py|forward_only|_call_impl"),
    ("sampling", r"sample \(steering/engine/tokens\.py|guard_repetition|argmax"),
    ("detokenizing", r"push \(steering/engine/tokens\.py|flush \(steering/engine/tokens\.py|decode \("),
    ("per-row Python work (step, advance)", r"step \(steering/engine/generation\.py|_advance \("),
    ("scheduler and tickets", r"steering/inference/"),
    ("websocket, channels, Django", r"channels/|daphne/|django/|twisted/|autobahn/|consumers\.py"),
    ("idle (waiting)", r"wait \(threading\.py|select \(selectors\.py|_worker \(concurrent|epoll|poll \("),
]


def summarise(lines, within: str | None = None) -> dict[str, float]:
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if within and not re.search(within, stack):
            continue
        n = int(count)
        total += n
        bucket = next((name for name, pattern in BUCKETS if re.search(pattern, stack)), "other")
        counts[bucket] += n
    return {"samples": total, **{name: round(counts[name] / total, 3) for name, _ in [*BUCKETS, ("other", "")] if counts[name]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--within", help="only samples whose stack matches this regular expression, e.g. 'DecodeBatch\\.step '")
    args = parser.parse_args()
    with open(args.profile) as handle:
        print(json.dumps(summarise(handle, args.within)))


if __name__ == "__main__":
    sys.exit(main())
