"""Websocket chat under load: N clients at once, each with its own user and its own
preferences, against a server this script starts (or one given with --url and --cookie).

    .venv/bin/python bench/chat_load.py [--clients 1,4,8,16] [--tokens 48] [--rounds 2]

For each N it prints one JSON line: aggregate tokens/s (all tokens of the round over its wall
time, from the first send to the last done), p50/p95 time to first token, and errors. The last
line compares 8 clients with 1. `--stagger S` spreads the clients' arrivals S seconds apart, as
real users arrive, instead of all in the same instant. Greedy decoding on prompts that give long answers, so rows
run close to --tokens each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets  # noqa: E402

from bench.server import BenchServer  # noqa: E402

PROMPTS = [
    "Describe a relaxing weekend in a new city.",
    "How should I plan a dinner for friends?",
    "Write a short guide to packing for a trip.",
    "What should I know before buying a used car?",
    "Explain how to start a vegetable garden.",
    "Give advice for a first job interview.",
    "Describe a good morning routine.",
    "How do I choose a gift for a colleague?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def one_client(url: str, cookie: str, origin: str, index: int, tokens: int, delay: float = 0.0) -> dict:
    await asyncio.sleep(delay)
    strength = round(-1 + 2 * (index % 9) / 8, 2)  # distinct preferences per client
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin},
                                  max_size=2**22, open_timeout=60) as ws:
        sent = time.perf_counter()
        # Greedy (the chat's default samples): texts are compared across runs and with the engine alone.
        await ws.send(json.dumps({
            "type": "generate", "prompt": PROMPTS[index % len(PROMPTS)], "max_new_tokens": tokens, "temperature": 0,
            "preferences": {"formality": strength},
        }))
        first = None
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=600))
            if frame["type"] == "token" and first is None:
                first = time.perf_counter()
            if frame["type"] == "done":
                return {"sent": sent, "end": time.perf_counter(), "ttft": (first or time.perf_counter()) - sent,
                        "tokens": frame["stats"]["tokens"], "error": None}
            if frame["type"] == "error":
                return {"sent": sent, "end": time.perf_counter(), "ttft": None, "tokens": 0,
                        "error": frame["code"]}


async def level(url: str, cookies: list[str], origin: str, clients: int, tokens: int, rounds: int,
                stagger: float = 0.0) -> dict:
    rates, ttfts, errors, total_tokens = [], [], 0, 0
    for _ in range(rounds):
        results = await asyncio.gather(
            *[one_client(url, cookies[i], origin, i, tokens, i * stagger) for i in range(clients)],
            return_exceptions=True,
        )
        good = [r for r in results if isinstance(r, dict) and r["error"] is None]
        errors += len(results) - len(good)
        if good:
            wall = max(r["end"] for r in good) - min(r["sent"] for r in good)
            round_tokens = sum(r["tokens"] for r in good)
            total_tokens += round_tokens
            rates.append(round_tokens / wall)
            ttfts += [r["ttft"] for r in good]
    return {
        "clients": clients,
        "stagger_s": stagger,
        "tokens_per_s": round(statistics.median(rates), 1) if rates else 0.0,
        "ttft_p50_s": round(percentile(ttfts, 0.5), 3) if ttfts else None,
        "ttft_p95_s": round(percentile(ttfts, 0.95), 3) if ttfts else None,
        "tokens": total_tokens,
        "errors": errors,
    }


async def main(args) -> None:
    levels = [int(n) for n in args.clients.split(",")]
    if args.url:
        url, cookies, origin = args.url, [args.cookie] * max(levels), args.origin
        server = None
    else:
        server = BenchServer(users=max(levels)).__enter__()
        url, cookies, origin = server.ws_url, server.cookies, server.http_url
    try:
        await level(url, cookies, origin, 1, 8, 1)  # warm-up: first-use costs stay out of the figures
        figures = {}
        for n in levels:
            figures[n] = await level(url, cookies, origin, n, args.tokens, args.rounds, args.stagger)
            print(json.dumps(figures[n]), flush=True)
        if 1 in figures and 8 in figures and figures[1]["tokens_per_s"]:
            print(json.dumps({
                "speedup_8_vs_1": round(figures[8]["tokens_per_s"] / figures[1]["tokens_per_s"], 2),
                "ttft_p95_8_over_p95_1": round(figures[8]["ttft_p95_s"] / figures[1]["ttft_p95_s"], 2),
            }), flush=True)
    finally:
        if server is not None:
            server.__exit__(None, None, None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between two clients' first messages (0: all at once)")
    parser.add_argument("--url", help="a running server's ws://…/ws/chat/ (default: start one)")
    parser.add_argument("--cookie", help="with --url: a logged-in session cookie, sessionid=…")
    parser.add_argument("--origin", default="http://127.0.0.1:8000", help="with --url: the Origin header")
    asyncio.run(main(parser.parse_args()))
