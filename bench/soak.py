"""A bounded soak on loopback: REST and websocket clients at once against a server this script
starts (its own database, bootstrapped, served by daphne), for --duration seconds (at most
600). Then it prints what was served, the errors, latency percentiles per kind of request,
and the server's memory: RSS at start, after the warm-up, at the end, and its peak.

    .venv/bin/python bench/soak.py [--duration 180] [--rest 4] [--ws 4] [--tokens 16]

REST clients cycle through health, profile reads and writes, vector-set and interaction
lists, and short chats, with a token. Websocket clients generate, sometimes cancel mid-answer,
ping, and reconnect every few turns. An error is a 5xx, a refused connection, an exception, or
an error frame (busy, too_many and the rest): none are expected at these loads. The figures of
the warm-up (--warmup seconds) are left out of the percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets  # noqa: E402

from bench.chat_load import PROMPTS, percentile  # noqa: E402
from bench.server import BenchServer  # noqa: E402

MAX_DURATION = 600
# In-flight requests may finish this long after the deadline; later ones count as unfinished.
GRACE_S = 30

# The server's default vector set: random vectors shaped for the embedded model, registered
# in a second. Steering costs the same whatever the vectors hold, and `bootstrap` would spend
# minutes extracting six dimensions on a busy machine before the soak could begin.
QUICK_VECTOR_SET = """
import torch
from steering.engine import SteeringVectors
from steering.serving.runtime import site_model_id
from steering.services import vector_sets
dims = ["formality", "cost"]
for name in dims:
    vector_sets.dimension_import_default(name=name)
generator = torch.Generator().manual_seed(0)
layers, hidden = 30, 576  # SmolLM2-135M-Instruct
vectors = SteeringVectors(
    model_id=site_model_id(), hidden_size=hidden, num_layers=layers, layers=list(range(8, 23)),
    vectors={d: torch.randn(layers, hidden, generator=generator) for d in dims},
    residual_norms=torch.full((layers,), 10.0), functional_range={d: 0.02 for d in dims},
    labels={d: [f"less {d}", f"more {d}"] for d in dims},
)
vector_sets.vector_set_register(vectors=vectors, name="soak")
"""


class SoakServer(BenchServer):
    """A BenchServer whose set-up registers QUICK_VECTOR_SET instead of running bootstrap."""

    def manage(self, *args: str) -> str:
        if args == ("bootstrap",):
            args = ("shell", "-c", QUICK_VECTOR_SET)
        return super().manage(*args)


class Tally:
    """Latencies and errors per kind of request, counted only once the warm-up is over."""

    def __init__(self) -> None:
        self.measuring = False
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.examples: list[str] = []
        self.in_flight = 0

    def record(self, kind: str, seconds: float, error: str | None = None) -> None:
        if not self.measuring:
            return
        self.latency[kind].append(seconds)
        if error:
            self.errors[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {error}")

    def summary(self) -> dict:
        kinds = {}
        for kind, values in sorted(self.latency.items()):
            kinds[kind] = {
                "n": len(values), "errors": self.errors.get(kind, 0),
                "p50_ms": round(1000 * percentile(values, 0.5)), "p95_ms": round(1000 * percentile(values, 0.95)),
            }
        every = [v for values in self.latency.values() for v in values]
        return {
            "requests": len(every),
            "errors": sum(self.errors.values()) + self.in_flight,
            "unfinished_at_deadline": self.in_flight,
            "p50_ms": round(1000 * percentile(every, 0.5)) if every else None,
            "p95_ms": round(1000 * percentile(every, 0.95)) if every else None,
            "by_kind": kinds,
            "error_examples": self.examples,
        }


def http(method: str, url: str, token: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


async def rest_client(server: BenchServer, index: int, tally: Tally, stop: float, tokens: int) -> None:
    rng = random.Random(index)
    token, base = server.tokens[index], server.http_url
    steps = [
        ("health", "GET", "/api/health/", None),
        ("profile", "GET", "/api/profile/", None),
        ("profile_write", "PATCH", "/api/profile/", lambda: {"strengths": {"formality": round(rng.uniform(-1, 1), 2)}}),
        ("vector_sets", "GET", "/api/vector-sets/", None),
        ("interactions", "GET", "/api/interactions/", None),
        ("rest_chat", "POST", "/api/chat/", lambda: {"prompt": rng.choice(PROMPTS), "max_new_tokens": tokens}),
    ]
    while time.monotonic() < stop:
        kind, method, path, body = rng.choice(steps)
        started = time.perf_counter()
        tally.in_flight += 1
        try:
            code = await asyncio.to_thread(http, method, base + path, token, body() if body else None)
            error = None if code < 400 else f"HTTP {code}"
        except Exception as exc:  # a refused or dropped connection counts against the server
            error = repr(exc)
        tally.in_flight -= 1
        tally.record(kind, time.perf_counter() - started, error)


async def ws_client(server: BenchServer, index: int, tally: Tally, stop: float, tokens: int) -> None:
    rng = random.Random(1000 + index)
    cookie = server.cookies[index]
    while time.monotonic() < stop:
        started = time.perf_counter()
        try:
            async with websockets.connect(server.ws_url, additional_headers={"Cookie": cookie, "Origin": server.http_url},
                                          open_timeout=60) as ws:
                tally.record("ws_connect", time.perf_counter() - started)
                for _ in range(rng.randrange(2, 6)):  # turns on this socket, then reconnect
                    if time.monotonic() >= stop:
                        break
                    await ws_turn(ws, rng, tally, tokens)
        except Exception as exc:
            tally.record("ws_connect", time.perf_counter() - started, repr(exc))
            await asyncio.sleep(1)


async def ws_turn(ws, rng: random.Random, tally: Tally, tokens: int) -> None:
    started = time.perf_counter()
    if rng.random() < 0.15:
        await ws.send(json.dumps({"type": "ping"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
        tally.record("ws_ping", time.perf_counter() - started, None if reply == {"type": "pong"} else str(reply))
        return
    cancel = rng.random() < 0.2
    kind = "ws_cancelled" if cancel else "ws_chat"
    tally.in_flight += 1
    try:
        error = await ws_generate(ws, rng, tokens, cancel)
    except Exception as exc:  # the socket dropped mid-answer (cancelled at the deadline: unfinished)
        tally.in_flight -= 1
        tally.record(kind, time.perf_counter() - started, repr(exc))
        raise
    tally.in_flight -= 1
    tally.record(kind, time.perf_counter() - started, error)


async def ws_generate(ws, rng: random.Random, tokens: int, cancel: bool) -> str | None:
    """One generation to its end (cancelled after its first token with `cancel`): None when
    it ends with done, else what went wrong."""
    await ws.send(json.dumps({"type": "generate", "prompt": rng.choice(PROMPTS), "max_new_tokens": tokens,
                              "preferences": {"formality": round(rng.uniform(-1, 1), 2)}}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=300))
        if frame["type"] == "token" and cancel:
            await ws.send(json.dumps({"type": "cancel", "request_id": frame["request_id"]}))
            cancel = False
        if frame["type"] == "done":
            return None
        if frame["type"] == "error":
            return f"{frame['code']}: {frame['message']}"


async def sample_rss(server: BenchServer, stop: float, peak: list[float]) -> None:
    while time.monotonic() < stop:
        peak[0] = max(peak[0], server.rss_mib())
        await asyncio.sleep(2)


async def soak(args) -> dict:
    users = args.rest + args.ws
    with SoakServer(users=users) as server:
        memory = {"start_mib": round(server.rss_mib(), 1)}
        tally = Tally()
        began = time.monotonic()
        stop = began + args.duration
        peak = [server.rss_mib()]
        clients = [rest_client(server, i, tally, stop, args.tokens) for i in range(args.rest)]
        clients += [ws_client(server, args.rest + i, tally, stop, args.tokens) for i in range(args.ws)]
        clients.append(sample_rss(server, stop, peak))

        async def end_warm_up():
            await asyncio.sleep(args.warmup)
            memory["after_warmup_mib"] = round(server.rss_mib(), 1)
            tally.measuring = True

        # Clients start no request after `stop`; whatever is still running GRACE_S later is
        # cancelled and counted as unfinished, so the soak ends on time whatever happens.
        tasks = [asyncio.ensure_future(c) for c in [end_warm_up(), *clients]]
        _, pending = await asyncio.wait(tasks, timeout=args.duration + GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        end = server.rss_mib()
        memory["end_mib"] = round(end, 1)
        memory["peak_mib"] = round(max(peak[0], end), 1)  # sampled every 2 s, so the end may top it
        memory["growth_after_warmup_mib"] = round(memory["end_mib"] - memory["after_warmup_mib"], 1)
        measured = min(time.monotonic() - began, args.duration) - args.warmup
        alive = server.process.poll() is None
    result = {
        "duration_s": args.duration, "warmup_s": args.warmup, "rest_clients": args.rest, "ws_clients": args.ws,
        "tokens": args.tokens, **tally.summary(), "memory": memory, "server_alive_at_end": alive,
    }
    result["requests_per_s"] = round(result["requests"] / measured, 2) if measured > 0 else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180, help=f"seconds, at most {MAX_DURATION}")
    parser.add_argument("--warmup", type=float, default=20, help="seconds left out of the figures")
    parser.add_argument("--rest", type=int, default=4, help="REST clients")
    parser.add_argument("--ws", type=int, default=4, help="websocket clients")
    parser.add_argument("--tokens", type=int, default=16, help="max_new_tokens of each chat")
    args = parser.parse_args()
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION}]")
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be shorter than --duration")
    result = asyncio.run(soak(args))
    print(json.dumps(result), flush=True)
    print(f"served {result['requests']} requests ({result['requests_per_s']}/s), errors {result['errors']} "
          f"({result['unfinished_at_deadline']} unfinished at the deadline), "
          f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms; RSS {result['memory']['start_mib']} → "
          f"{result['memory']['after_warmup_mib']} → {result['memory']['end_mib']} MiB "
          f"(peak {result['memory']['peak_mib']})", flush=True)
    for kind, figures in result["by_kind"].items():
        print(f"  {kind:14s} n={figures['n']:5d} errors={figures['errors']:3d} "
              f"p50={figures['p50_ms']:6d} ms p95={figures['p95_ms']:6d} ms", flush=True)
    sys.exit(1 if result["errors"] or not result["server_alive_at_end"] else 0)


if __name__ == "__main__":
    main()
