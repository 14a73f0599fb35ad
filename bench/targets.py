"""Every figure of the serving targets (docs/benchmarks.md), measured side by side in one run on the embedded
model, each printed as one JSON line (and a summary table at the end).

    .venv/bin/python bench/targets.py [--dtype auto] [--tokens 48] [--soak 600] [--compare-float32]
                                      [--py-spy profile.txt]

Needs the bench-only packages: `.venv/bin/pip install py-spy steering-vectors==0.12.2` (py-spy
only with --py-spy, which samples the server while 8 users chat; bench/profile_summary.py
says where that time went).

In order:
1. limit: the model's own forward passes (KV cache, no sampling, no steering), 24 decode steps
   after a 40-token prompt, at batch 1 and 8, in the served dtype; and the time to prefill
   the 8 chat prompts as one batch (the floor of time-to-first-token for 8 simultaneous users).
2. engine: one stream steered (formality 0.8, its 16 layers) vs unsteered, interleaved.
3. peers: transformers' `generate` on the 8 prompts batched (unsteered), and the
   steering-vectors library serving the 8 steered requests one after another with its hook.
4. server (a fresh `BenchServer`, daphne + websocket, the served dtype): 1 user, then 8 users
   with 8 different formality strengths arriving at once; Poisson arrivals at about 70 % of
   the 8-user capacity; one long stream's gaps between tokens while 7 newcomers prefill;
   RSS over `--soak` seconds of mixed load after a warm-up.
With `--compare-float32`, step 4's 1-vs-8 users is repeated on a float32 server (the old default).
Greedy decoding, end-of-turn stops off in-process; over the websocket the prompts give long
answers, so rows run close to --tokens each. Ratios are what to read: the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import websockets  # noqa: E402

from bench.chat_load import PROMPTS, percentile  # noqa: E402
from bench.profile_summary import summarise  # noqa: E402
from bench.server import BenchServer  # noqa: E402
from steering.data import catalog  # noqa: E402
from steering.engine import SteerableModel  # noqa: E402
from steering.engine.loading import pad_left  # noqa: E402
from steering.engine.loading import resolve_dtype  # noqa: E402

STRENGTHS = [round(-1 + 2 * i / 7, 3) for i in range(8)]  # 8 distinct preferences
figures: dict[str, float] = {}


def emit(name: str, **values) -> None:
    print(json.dumps({"figure": name, **values}), flush=True)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- 1. the limit --------------------------------------------------------------------------


@torch.inference_mode()
def forward_only(model: SteerableModel, batch: int, prompt_tokens: int = 40, steps: int = 24) -> float:
    """Tokens/s of bare decode forward passes: what the model itself allows at `batch`."""
    loaded = model.loaded
    ids = (loaded.chat_ids(" ".join(PROMPTS)) * 2)[:prompt_tokens]
    input_ids = torch.tensor([ids] * batch)
    out = loaded.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for _ in range(steps):
        out = loaded.model(input_ids=token, past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return batch * steps / (time.perf_counter() - start)


@torch.inference_mode()
def batch_prefill_seconds(model: SteerableModel, repeats: int) -> float:
    loaded = model.loaded
    input_ids, mask, positions = pad_left([loaded.chat_ids(p) for p in PROMPTS], loaded.pad_id, loaded.device)
    return _median_time(
        lambda: loaded.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1),
        repeats,
    )


# -- 2. steered vs unsteered, and 3. the peers ----------------------------------------------


def stream_rate(model: SteerableModel, items: list[dict]) -> float:
    requests = [model.request(**item) for item in items]
    start = time.perf_counter()
    tokens = sum(1 for event in model.stream_requests(requests) if event.token_id is not None)
    return tokens / (time.perf_counter() - start)


@torch.inference_mode()
def hf_generate_batched(model: SteerableModel, tokens: int) -> float:
    loaded = model.loaded
    input_ids, mask, _ = pad_left([loaded.chat_ids(p) for p in PROMPTS], loaded.pad_id, loaded.device)
    start = time.perf_counter()
    loaded.model.generate(input_ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                          do_sample=False, pad_token_id=loaded.pad_id)
    return len(PROMPTS) * tokens / (time.perf_counter() - start)


@torch.inference_mode()
def steering_vectors_serial(model: SteerableModel, tokens: int) -> float:
    """The steering-vectors library as a server must use it: its hook patches the model for
    one steering at a time, so the 8 differently steered requests run one after another."""
    from steering_vectors import SteeringVector

    loaded, vectors = model.loaded, model.vector_sets["formality"]
    start = time.perf_counter()
    for prompt, strength in zip(PROMPTS, STRENGTHS):
        deltas = vectors.layer_deltas({"formality": strength})
        vector = SteeringVector({layer: d.to(loaded.dtype) for layer, d in deltas.items()}, "decoder_block")
        ids = torch.tensor([loaded.chat_ids(prompt)])
        with vector.apply(loaded.model):
            loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                  min_new_tokens=tokens, do_sample=False, pad_token_id=loaded.pad_id)
    return len(PROMPTS) * tokens / (time.perf_counter() - start)


# -- 4. over the websocket ----------------------------------------------------------------


async def client(server: BenchServer, index: int, tokens: int, delay: float = 0.0) -> dict:
    """One user's request: send time, every token frame's arrival time, and the end."""
    await asyncio.sleep(delay)
    headers = {"Cookie": server.cookies[index], "Origin": server.http_url}
    async with websockets.connect(server.ws_url, additional_headers=headers, max_size=2**22, open_timeout=60) as ws:
        sent = time.perf_counter()
        # Greedy (the chat's default samples): texts are compared across runs and with the engine alone.
        await ws.send(json.dumps({
            "type": "generate", "prompt": PROMPTS[index % len(PROMPTS)], "max_new_tokens": tokens, "temperature": 0,
            "preferences": {"formality": STRENGTHS[index % len(STRENGTHS)]},
        }))
        arrivals = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=900))
            if frame["type"] == "token":
                arrivals.append(time.perf_counter())
            elif frame["type"] in ("done", "error"):
                end = time.perf_counter()
                return {"sent": sent, "end": end, "arrivals": arrivals or [end], "error": frame.get("code"),
                        "tokens": frame.get("stats", {}).get("tokens", 0)}


async def one_round(server: BenchServer, users: int, tokens: int) -> tuple[float, list[float]]:
    """`users` sending at once: their aggregate tok/s and each one's time to first token."""
    results = await asyncio.gather(*[client(server, i, tokens) for i in range(users)])
    assert not any(r["error"] for r in results), results
    wall = max(r["end"] for r in results) - min(r["sent"] for r in results)
    return sum(r["tokens"] for r in results) / wall, [r["arrivals"][0] - r["sent"] for r in results]


async def together(server: BenchServer, users: int, tokens: int, rounds: int) -> dict:
    rates, ttfts = [], []
    for _ in range(rounds):
        rate, firsts = await one_round(server, users, tokens)
        rates.append(rate)
        ttfts += firsts
    return {"tokens_per_s": statistics.median(rates), "ttft_p50_s": percentile(ttfts, 0.5),
            "ttft_p95_s": percentile(ttfts, 0.95)}


async def poisson(server: BenchServer, rate: float, count: int, tokens: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    delays, t = [], 0.0
    for _ in range(count):
        t += rng.expovariate(rate)
        delays.append(t)
    results = await asyncio.gather(*[client(server, i % len(server.cookies), tokens, d)
                                     for i, d in enumerate(delays)])
    assert not any(r["error"] for r in results), [r["error"] for r in results]
    ttfts = [r["arrivals"][0] - r["sent"] for r in results]
    return {"requests": count, "rate_per_s": rate, "ttft_p50_s": percentile(ttfts, 0.5),
            "ttft_p95_s": percentile(ttfts, 0.95)}


async def gaps_during_prefill(server: BenchServer, tokens: int) -> dict:
    """A long stream runs alone, then 7 newcomers arrive at once: the stream's gaps between
    tokens while they prefill (from their send to the last one's first token), against its
    steady gaps once all 8 decode together."""
    long = asyncio.create_task(client(server, 0, tokens * 4))
    await asyncio.sleep(3.0)  # the long stream decodes alone by then
    if long.done():
        raise RuntimeError("the long stream ended before the newcomers came")
    newcomers = await asyncio.gather(*[client(server, i, tokens) for i in range(1, 8)])
    first = await long
    joined_from = min(r["sent"] for r in newcomers)
    joined_to = max(r["arrivals"][0] for r in newcomers)
    times = first["arrivals"]
    gaps = [(b - a, b) for a, b in zip(times, times[1:])]
    during = [g for g, at in gaps if joined_from <= at <= joined_to + 1e-3]
    # "Steady": the stream's gaps once the newcomers all stream, before the first of them ends.
    steady_to = min(r["end"] for r in newcomers)
    steady = [g for g, at in gaps if joined_to + 0.5 < at < steady_to]
    return {"gap_during_prefill_p95_s": max(during) if len(during) < 3 else percentile(during, 0.95),
            "gaps_during_prefill": len(during), "steady_gap_p50_s": statistics.median(steady) if steady else None}


async def soak(server: BenchServer, seconds: float, tokens: int) -> dict:
    """Mixed load (varied lengths, all 8 preferences, arrivals ~ Poisson) for `seconds`; RSS
    after the first fifth (warm-up) against the end."""
    rng = random.Random(1)
    stop = time.perf_counter() + seconds
    samples: list[tuple[float, float]] = []
    started = time.perf_counter()

    async def user(i: int) -> None:
        while time.perf_counter() < stop:
            await client(server, i, rng.choice([8, tokens // 2, tokens]))
            await asyncio.sleep(rng.expovariate(2.0))

    async def sample() -> None:
        while time.perf_counter() < stop:
            samples.append((time.perf_counter() - started, server.rss_mib()))
            await asyncio.sleep(2.0)

    await asyncio.gather(sample(), *[user(i) for i in range(8)])
    samples.append((time.perf_counter() - started, server.rss_mib()))
    warm = next(rss for at, rss in samples if at >= seconds / 5)
    return {"seconds": seconds, "rss_after_warmup_mib": warm, "rss_end_mib": samples[-1][1],
            "rss_peak_mib": max(rss for _, rss in samples), "growth_pct": 100 * (samples[-1][1] - warm) / warm}


def _start_py_spy(server: BenchServer, path: str) -> subprocess.Popen:
    """py-spy sampling the server process (all its threads, idle ones left out)."""
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.pid),
                            "--format", "raw", "-r", "25", "--nonblocking", "-o", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # it attaches before the clients start
    return spy


async def served(args, dtype: str, *, full: bool) -> None:
    with BenchServer(users=32, env={"STEERLAB_DTYPE": dtype}) as server:
        await together(server, 1, 8, 1)  # warm-up: first-use costs stay out of the figures
        one = await together(server, 1, args.tokens, args.rounds)
        spy = _start_py_spy(server, args.py_spy) if args.py_spy and full else None
        eight = await together(server, 8, args.tokens, args.rounds)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            spy.wait(60)
            with open(args.py_spy) as handle:
                emit("profile_8_users", file=args.py_spy, **summarise(handle))
        tag = "" if full else f"_{dtype}"
        figures["served_1_tokens_per_s" + tag] = one["tokens_per_s"]
        figures["served_8_tokens_per_s" + tag] = eight["tokens_per_s"]
        figures["served_1_ttft_s" + tag] = one["ttft_p50_s"]
        figures["served_8_ttft_p95_s" + tag] = eight["ttft_p95_s"]
        emit("served", dtype=dtype, one_user=one, eight_users=eight)
        if not full:
            return
        capacity = eight["tokens_per_s"] / args.tokens  # requests/s the server completes at 8 rows
        stagger = await poisson(server, 0.7 * capacity, args.poisson_requests, args.tokens)
        figures["poisson_ttft_p95_s"] = stagger["ttft_p95_s"]
        emit("poisson", **stagger)
        gaps = await gaps_during_prefill(server, args.tokens)
        figures["gap_during_prefill_p95_s"] = gaps["gap_during_prefill_p95_s"]
        figures["steady_gap_s"] = gaps["steady_gap_p50_s"]
        emit("gaps", **gaps)
        if args.soak:
            memory = await soak(server, args.soak, args.tokens)
            figures["rss_growth_pct"] = memory["growth_pct"]
            emit("memory", **memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="auto", help="auto, float32 or bfloat16 (the served dtype)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--poisson-requests", type=int, default=24)
    parser.add_argument("--soak", type=float, default=600.0, help="seconds of mixed load for the memory figure (0: skip)")
    parser.add_argument("--compare-float32", action="store_true",
                        help="also serve 1 and 8 users from a float32 server (the old default)")
    parser.add_argument("--check-extraction", action="store_true",
                        help="compare the served dtype's vectors with a float32 copy's (minutes on 2 cores)")
    parser.add_argument("--py-spy", metavar="PATH", help="profile the server during the 8 users' rounds into PATH")
    args = parser.parse_args()

    dtype = resolve_dtype(args.dtype, torch.device("cpu"))
    dtype_name = str(dtype).removeprefix("torch.")
    emit("setup", dtype=dtype_name, threads=torch.get_num_threads(), tokens=args.tokens, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         server_settings={k: v for k, v in sorted(os.environ.items()) if k.startswith("STEERLAB_")})

    model = SteerableModel.load(dtype=dtype)
    model.loaded.stop_ids = frozenset()  # fixed-length runs
    positive, negative = catalog.examples("formality")
    vectors = model.add_vectors(model.compute_vectors({"formality": (positive, negative)}), "formality")
    if args.check_extraction and dtype != torch.float32:
        # Whether extraction may run in the served dtype: the same vectors from a float32 copy.
        reference = SteerableModel.load(dtype=torch.float32).compute_vectors({"formality": (positive, negative)})
        cosines = [
            float(torch.nn.functional.cosine_similarity(vectors.vectors["formality"][layer].float(),
                                                        reference.vectors["formality"][layer].float(), dim=0))
            for layer in vectors.layers
        ]
        emit("extraction", dtype=dtype_name, layers=vectors.layers, same_layers_as_float32=vectors.layers == reference.layers,
             cosine_vs_float32_min=min(cosines),
             cosine_vs_float32_mean=statistics.mean(cosines))
        del reference

    forward_only(model, 8, steps=4)  # warm-up
    figures["forward_b1"] = statistics.median(forward_only(model, 1) for _ in range(args.repeats))
    figures["forward_b8"] = statistics.median(forward_only(model, 8) for _ in range(args.repeats))
    figures["prefill_8_s"] = batch_prefill_seconds(model, args.repeats)
    emit("limit", dtype=dtype_name, forward_tokens_per_s_b1=figures["forward_b1"],
         forward_tokens_per_s_b8=figures["forward_b8"], prefill_8_prompts_s=figures["prefill_8_s"])
    if dtype != torch.float32:
        # The same limits in float32 (the old default), for the dtype's before/after.
        plain = SteerableModel.load(dtype=torch.float32)
        figures["forward_b1_float32"] = statistics.median(forward_only(plain, 1) for _ in range(args.repeats))
        figures["forward_b8_float32"] = statistics.median(forward_only(plain, 8) for _ in range(args.repeats))
        emit("limit", dtype="float32", forward_tokens_per_s_b1=figures["forward_b1_float32"],
             forward_tokens_per_s_b8=figures["forward_b8_float32"])
        del plain

    def item(strength: float) -> dict:
        return {"prompt": PROMPTS[0], "preferences": {"formality": strength} if strength else None,
                "max_new_tokens": args.tokens}

    stream_rate(model, [item(0.5)])  # warm-up
    plain, steered = [], []
    for _ in range(args.repeats):
        plain.append(stream_rate(model, [item(0.0)]))
        steered.append(stream_rate(model, [item(0.8)]))
    figures["single_unsteered"], figures["single_steered"] = statistics.median(plain), statistics.median(steered)
    emit("single_stream", unsteered=figures["single_unsteered"], steered=figures["single_steered"])

    figures["hf_generate_8"] = statistics.median(hf_generate_batched(model, args.tokens) for _ in range(2))
    figures["steering_vectors_8"] = steering_vectors_serial(model, args.tokens)
    emit("peers", hf_generate_batched_8_unsteered=figures["hf_generate_8"],
         steering_vectors_8_one_at_a_time=figures["steering_vectors_8"])
    del model

    asyncio.run(served(args, args.dtype, full=True))
    if args.compare_float32:
        asyncio.run(served(args, "float32", full=False))

    f = figures
    rows = [
        ("8 users / forward-only batch 8", f["served_8_tokens_per_s"] / f["forward_b8"], "≥ 0.85"),
        ("8 users / 1 served user", f["served_8_tokens_per_s"] / f["served_1_tokens_per_s"], "≥ 4.5"),
        ("steered / unsteered single stream", f["single_steered"] / f["single_unsteered"], "≥ 0.97"),
        ("8 at once: p95 TTFT / batch prefill of the 8", f["served_8_ttft_p95_s"] / f["prefill_8_s"], "≤ 1.25"),
        ("Poisson ~70 %: p95 TTFT / one user's TTFT", f["poisson_ttft_p95_s"] / f["served_1_ttft_s"], "≤ 3"),
        ("gap while newcomers prefill (p95) / steady gap",
         f["gap_during_prefill_p95_s"] / f["steady_gap_s"] if f.get("steady_gap_s") else float("nan"), "≤ 2"),
        ("8 users / steering-vectors one at a time", f["served_8_tokens_per_s"] / f["steering_vectors_8"], "≥ 4"),
        ("8 users / transformers generate batched (unsteered)", f["served_8_tokens_per_s"] / f["hf_generate_8"], "—"),
    ]
    if "rss_growth_pct" in f:
        rows.append(("RSS growth after warm-up, %", f["rss_growth_pct"], "≤ 5"))
    if "forward_b8_float32" in f:
        rows.append(("forward-only batch 8, served dtype / float32", f["forward_b8"] / f["forward_b8_float32"], "—"))
        rows.append(("forward-only batch 1, served dtype / float32", f["forward_b1"] / f["forward_b1_float32"], "—"))
    if args.compare_float32:
        rows.append(("8 users, served dtype / float32 server", f["served_8_tokens_per_s"] / f["served_8_tokens_per_s_float32"], "—"))
        rows.append(("1 user, served dtype / float32 server", f["served_1_tokens_per_s"] / f["served_1_tokens_per_s_float32"], "—"))
    emit("figures", **{k: round(v, 4) for k, v in f.items() if v is not None})
    print(f"\n| target ({dtype_name}) | measured | goal |\n|---|---|---|")
    for name, value, goal in rows:
        print(f"| {name} | {value:.2f} | {goal} |")


if __name__ == "__main__":
    main()
