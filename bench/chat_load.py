"""The load curve: websocket chat at 1, 8, 16, 32 and 64 users at once, each its own user with
its own steering, on the builtin engine and on vLLM, against a server this script starts (or
one given with --url and --cookie).

    .venv/bin/python bench/chat_load.py [--clients 1,8,16,32,64] [--engine builtin|vllm|both]
                                        [--tokens 48] [--rounds 2] [--plot FILE.svg]

Set-up: one throwaway database (the formality vector set, range search off, as
bench/vllm_serving.py does: `bootstrap` computes six dimensions and takes many minutes), then
daphne on it per engine: the builtin engine from this interpreter, vLLM from .venv-vllm with
STEERLAB_ENGINE=vllm (docs/vllm.md), in the site's default dtype unless --dtype says otherwise.
Before the servers start, the builtin model's forward-only decode throughput (bench/targets.py)
at each level's batch, min(users, STEERLAB_MAX_BATCH), is measured in this process: the
physical limit the curve is compared with. vLLM's own limit at the served dtype is not measured
here: bench/vllm_serving.py measures it (`LLM.generate` of 8 prompts, in the served dtype)
beside both engines served to 8 users; the output says so.

Per engine and level, one JSON line:
- aggregate tokens/s: all answered tokens of a round over its wall time (first send to last
  end), the median over --rounds;
- p50 / p95 / p99 time to first token (send → first token frame) and gap between token frames;
- errors: anything but an answer or a clean refusal (an error frame of another code, a refusal
  without retry_after, a dropped socket, a timeout), each kind counted and the first few printed;
- refusals: `busy` / `too_many` frames with a positive integer retry_after, counted by code;
- the server's memory: the RSS of daphne and its child processes summed, sampled every
  0.5 s during the level (peak) and after it (idle), and daphne's own VmHWM.
Then the settings, the limit, the checks users rely on (no errors, clean refusals only,
throughput that does not fall as users are added, memory that stops growing once the batch is
full), a markdown table of the curve and, with --plot, an SVG of tokens/s and p95 first token
against users, one line per engine. Exits 1 when a level errors.

Each client sends a prompt of its own (a reader number before one of 8 questions), so vLLM's
prefix cache shares no more than real users' different questions would, and a formality
strength no other client of the level has. Greedy decoding on prompts that give long answers,
so rows run close to --tokens each. `--stagger S` spreads the clients' arrivals S seconds apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

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
REFUSALS = ("busy", "too_many")
EXAMPLES_PER_LEVEL = 3  # errors printed in full; the rest are counted

# What the server serves, read by the server's own interpreter and settings.
SERVED = """
import json
from django.conf import settings as s
from steering.engine.loading import resolve_device, resolve_dtype
device = resolve_device(s.STEERLAB_DEVICE)
print("SERVED=" + json.dumps({
    "engine": s.STEERLAB_ENGINE, "model": s.STEERLAB_MODEL, "device": str(device),
    "dtype": str(resolve_dtype(s.STEERLAB_DTYPE, device)).removeprefix("torch."),
    "max_batch": s.STEERLAB_MAX_BATCH, "max_queue": s.STEERLAB_MAX_QUEUE, "max_per_user": s.STEERLAB_MAX_PER_USER,
    "prefill_chunk": s.STEERLAB_PREFILL_CHUNK, "stream_interval_ms": s.STEERLAB_STREAM_INTERVAL_MS,
    "vllm_steered_rows": s.STEERLAB_VLLM_STEERED_ROWS,
    "vllm_eager": s.STEERLAB_VLLM_EAGER,
}))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def strengths(clients: int) -> list[float]:
    """A formality strength per client, all different and none zero (unsteered): ±1/k … ±1
    for k = ⌈clients / 2⌉, alternating signs."""
    half = math.ceil(clients / 2)
    return [round((1 if i % 2 == 0 else -1) * (i // 2 + 1) / half, 4) for i in range(clients)]


def prompt_for(client: int, round_: int, clients: int) -> str:
    return f"Reader {round_ * clients + client + 1}: {PROMPTS[client % len(PROMPTS)]}"


def outcome(frame: dict | None, failure: str | None = None) -> tuple[str, str]:
    """("ok" | "refused" | "error", a kind for counting) for a generation's last frame, or
    for an exception (`failure`). A refusal is clean only with a positive whole retry_after."""
    if failure is not None:
        return "error", failure
    if frame["type"] == "done":
        return "ok", "done"
    code, retry_after = frame.get("code"), frame.get("retry_after")
    if code in REFUSALS:
        if isinstance(retry_after, int) and not isinstance(retry_after, bool) and retry_after > 0:
            return "refused", code
        return "error", f"{code} without retry_after"
    return "error", f"error frame {code}"


async def one_client(url: str, cookie: str, origin: str, prompt: str, strength: float, tokens: int,
                     delay: float = 0.0) -> dict:
    """One user's generation: send time, every token frame's arrival, the end and the outcome."""
    await asyncio.sleep(delay)
    sent, arrivals, frame, failure = None, [], None, None
    try:
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin},
                                      max_size=2**22, open_timeout=60) as ws:
            sent = time.perf_counter()
            # Greedy (the chat's default samples): texts are compared across runs and engines.
            await ws.send(json.dumps({
                "type": "generate", "prompt": prompt, "max_new_tokens": tokens, "temperature": 0,
                "preferences": {"formality": strength},
            }))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=600))
                if frame["type"] == "token":
                    arrivals.append(time.perf_counter())
                elif frame["type"] in ("done", "error"):
                    break
    except Exception as exc:  # a refused connection, a dropped socket, a timeout: all errors
        failure = f"{exc.__class__.__name__}: {str(exc)[:200]}"
    end = time.perf_counter()
    status, kind = outcome(frame, failure)
    return {"sent": sent if sent is not None else end, "end": end, "arrivals": arrivals, "status": status,
            "kind": kind, "tokens": frame.get("stats", {}).get("tokens", 0) if status == "ok" else 0,
            "retry_after": frame.get("retry_after") if frame else None,
            "frame": frame if status == "error" else None}


# -- the server's memory --------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and every process below it, read from /proc (vLLM may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_mib(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mib(root: int) -> float:
    return sum(status_mib(pid, "VmRSS") for pid in process_tree(root))


class MemorySampler:
    """The server tree's RSS every `interval` seconds, on a thread: the event loop is busy
    with the clients, and a sample must not wait for it."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        self.pid, self.interval, self.samples = pid, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(tree_rss_mib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def peak(self) -> float | None:
        return round(max(self.samples), 1) if self.samples else None


# -- one level --------------------------------------------------------------------------------


def summary(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {f"p{q}": round(percentile(values, q / 100), 4) for q in (50, 95, 99)}


async def level(target: dict, clients: int, tokens: int, rounds: int, stagger: float = 0.0,
                engine: str = "external", limit: float | None = None) -> dict:
    rates, ttfts, gaps, answers, total_tokens = [], [], [], 0, 0
    errors, refusals, retry_afters, examples = Counter(), Counter(), [], []
    pid = target.get("pid")
    with MemorySampler(pid) as memory:
        for round_ in range(rounds):
            results = await asyncio.gather(*[
                one_client(target["url"], target["cookies"][i % len(target["cookies"])], target["origin"],
                           prompt_for(i, round_, clients), strength, tokens, i * stagger)
                for i, strength in enumerate(strengths(clients))
            ])
            good = [r for r in results if r["status"] == "ok"]
            answers += len(good)
            for r in results:
                if r["status"] == "refused":
                    refusals[r["kind"]] += 1
                    retry_afters.append(r["retry_after"])
                elif r["status"] == "error":
                    errors[r["kind"]] += 1
                    if len(examples) < EXAMPLES_PER_LEVEL:
                        examples.append({"kind": r["kind"], "frame": r["frame"]})
            if good:
                wall = max(r["end"] for r in good) - min(r["sent"] for r in good)
                round_tokens = sum(r["tokens"] for r in good)
                total_tokens += round_tokens
                rates.append(round_tokens / wall)
                ttfts += [r["arrivals"][0] - r["sent"] for r in good if r["arrivals"]]
                gaps += [b - a for r in good for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    for example in examples:  # never hidden: the frame itself, as the server sent it
        print(json.dumps({"error": example, "engine": engine, "clients": clients}), flush=True)
    tokens_per_s = round(statistics.median(rates), 1) if rates else 0.0
    figures = {
        "engine": engine,
        "clients": clients,
        "stagger_s": stagger,
        "tokens_per_s": tokens_per_s,
        "ttft_s": summary(ttfts),
        "gap_s": summary(gaps),
        "answers": answers,
        "tokens": total_tokens,
        "errors": sum(errors.values()),
        "errors_by_kind": dict(errors),
        "refusals": dict(refusals),
        "retry_after_s": sorted(set(retry_afters)),
    }
    if limit:
        figures["forward_limit_tokens_per_s"] = round(limit, 1)
        figures["of_forward_limit"] = round(tokens_per_s / limit, 3)
    if pid is not None:
        await asyncio.sleep(1.0)  # the last rows freed
        figures["rss_peak_mib"] = memory.peak
        figures["rss_after_mib"] = round(tree_rss_mib(pid), 1)
        figures["daphne_vmhwm_mib"] = round(status_mib(pid, "VmHWM"), 1)
    return figures


# -- the physical limit -------------------------------------------------------------------------


def forward_limits(batches: list[int], dtype: str, threads: int, repeats: int = 3) -> dict[int, float]:
    """The builtin model's bare decode forward passes (KV cache, no sampling, no steering) at
    each batch: bench/targets.py's `forward_only`, in the served dtype and the servers' threads,
    with no server running."""
    import torch

    from bench.targets import forward_only
    from steering.engine import SteerableModel

    torch.set_num_threads(threads)
    model = SteerableModel.load(dtype=dtype)
    forward_only(model, max(batches), steps=4)  # warm-up
    limits = {b: statistics.median(forward_only(model, b) for _ in range(repeats)) for b in batches}
    del model
    gc.collect()
    return limits


# -- the servers ------------------------------------------------------------------------------


def served_settings(server, python: str, engine: str) -> dict:
    result = subprocess.run([python, "manage.py", "shell", "-c", SERVED], cwd=ROOT,
                            env={**server.env, "STEERLAB_ENGINE": engine}, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"reading the {engine} server's settings failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.split("SERVED=", 1)[1].splitlines()[0])


def engine_python(engine: str, args) -> str:
    python = args.builtin_python if engine == "builtin" else args.vllm_python
    if not Path(python).exists():
        raise SystemExit(f"{python} is missing: the {engine} engine's interpreter"
                         + (" (build it with `make vllm`, docs/vllm.md)" if engine == "vllm" else ""))
    return python


async def curve(target: dict, engine: str, levels: list[int], args, limits: dict[int, float],
                max_batch: int) -> list[dict]:
    await level(target, 1, 8, 1, engine=engine)  # warm-up: first-use costs stay out of the figures
    rows = []
    for n in levels:
        figures = await level(target, n, args.tokens, args.rounds, args.stagger, engine,
                              limits.get(min(n, max_batch)) if engine == "builtin" else None)
        print(json.dumps(figures), flush=True)
        rows.append(figures)
    return rows


async def run_servers(args, levels: list[int], engines: list[str]) -> tuple[dict, dict, list[dict]]:
    import bench.server as bench_server
    from bench.vllm_serving import QuickBenchServer, restart

    bench_server.PYTHON = args.builtin_python  # migrates and computes the vectors
    env = {
        "STEERLAB_RANGE_SEARCH": "0",
        "OMP_NUM_THREADS": args.omp_threads,
        "MALLOC_ARENA_MAX": "2",  # as the image runs the server (Dockerfile)
        "STEERLAB_VLLM_MODEL_DIR": args.model_cache,
        "STEERLAB_VLLM_EAGER": "0" if args.compiled else "1",
        **({"STEERLAB_DTYPE": args.dtype} if args.dtype else {}),
    }
    served, limits, rows = {}, {}, []
    with QuickBenchServer(users=max(levels), env=env) as server:
        for engine in engines:
            served[engine] = served_settings(server, engine_python(engine, args), engine)
            print(json.dumps({"served": served[engine]}), flush=True)
        if "builtin" in engines and not args.no_limit:
            builtin = served["builtin"]
            batches = sorted({min(n, builtin["max_batch"]) for n in levels})
            limits = forward_limits(batches, builtin["dtype"], int(args.omp_threads))
            print(json.dumps({"limit": "builtin forward-only decode (bench/targets.py forward_only)",
                              "dtype": builtin["dtype"],
                              "tokens_per_s_at_batch": {b: round(v, 1) for b, v in limits.items()}}), flush=True)
        if "vllm" in engines:
            print(json.dumps({"limit": "vllm", "measured": False,
                              "why": "vLLM's own LLM.generate at the served dtype is measured by "
                                     "bench/vllm_serving.py (8 prompts), not per level here"}), flush=True)
        for engine in engines:
            started = time.perf_counter()
            restart(server, engine_python(engine, args), {"STEERLAB_ENGINE": engine})
            print(json.dumps({"engine": engine, "server_ready_s": round(time.perf_counter() - started, 1),
                              "rss_idle_mib": round(tree_rss_mib(server.pid), 1)}), flush=True)
            target = {"url": server.ws_url, "cookies": server.cookies, "origin": server.http_url, "pid": server.pid}
            rows += await curve(target, engine, levels, args, limits, served[engine]["max_batch"])
    return served, limits, rows


# -- the verdicts, the table, the plot -----------------------------------------------------------


def checks(rows: list[dict], max_batch: dict[str, int], tolerance: float = 0.05) -> list[dict]:
    """What users must get at every level, per engine. Throughput may dip by `tolerance`
    (a shared machine's noise) below the best of the fewer-user levels before it counts as
    falling; memory must stop growing (within 5 %) across the levels where the batch is full."""
    out = []
    for engine in dict.fromkeys(r["engine"] for r in rows):
        mine = [r for r in rows if r["engine"] == engine]
        out.append({"check": "no errors", "engine": engine, "met": all(r["errors"] == 0 for r in mine),
                    "errors": {r["clients"]: r["errors_by_kind"] for r in mine if r["errors"]}})
        out.append({"check": "refusals only clean busy/too_many with retry_after", "engine": engine,
                    "met": not any(k.endswith("without retry_after") for r in mine for k in r["errors_by_kind"]),
                    "refusals": {r["clients"]: r["refusals"] for r in mine if r["refusals"]}})
        ratios = {}
        for i, r in enumerate(mine[1:], 1):
            best = max(p["tokens_per_s"] for p in mine[:i])
            ratios[r["clients"]] = round(r["tokens_per_s"] / best, 3) if best else None
        out.append({"check": f"throughput does not fall (each level ≥ {1 - tolerance:.2f} × the best before)",
                    "engine": engine, "met": all(v is not None and v >= 1 - tolerance for v in ratios.values()),
                    "ratio_to_best_before": ratios})
        full = [r for r in mine if r["clients"] >= max_batch.get(engine, 0) and r.get("rss_after_mib")]
        if not any(r.get("rss_after_mib") for r in mine):
            out.append({"check": "memory bounded", "engine": engine, "met": None,
                        "why": "no memory figures (a server given with --url is not this script's process)"})
        elif len(full) >= 2:
            growth = 100 * (full[-1]["rss_after_mib"] - full[0]["rss_after_mib"]) / full[0]["rss_after_mib"]
            out.append({"check": "memory bounded (idle RSS after the level, across full-batch levels, grows ≤ 5 %)",
                        "engine": engine, "met": growth <= 5.0, "growth_pct": round(growth, 2),
                        "from_clients": full[0]["clients"], "to_clients": full[-1]["clients"],
                        "peak_mib": {r["clients"]: r["rss_peak_mib"] for r in mine}})
        else:
            out.append({"check": "memory bounded", "engine": engine, "met": None,
                        "why": f"fewer than two levels at or above the batch of {max_batch.get(engine)} rows",
                        "peak_mib": {r["clients"]: r.get("rss_peak_mib") for r in mine}})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| engine | users | tok/s | of forward limit | TTFT p50 / p95 / p99 (s) | gap p50 / p95 / p99 (s) "
             "| errors | refusals | RSS peak (MiB) |", "|---|---|---|---|---|---|---|---|---|"]

    def triple(s: dict) -> str:
        return " / ".join("—" if s[k] is None else f"{s[k]:.3f}" for k in ("p50", "p95", "p99"))

    for r in rows:
        refused = ", ".join(f"{k} {v}" for k, v in r["refusals"].items()) or "0"
        lines.append(f"| {r['engine']} | {r['clients']} | {r['tokens_per_s']:.1f} | {r.get('of_forward_limit', '—')} "
                     f"| {triple(r['ttft_s'])} | {triple(r['gap_s'])} | {r['errors']} | {refused} "
                     f"| {r.get('rss_peak_mib', '—')} |")
    return "\n".join(lines)


def plot(rows: list[dict], limits: dict[int, float], max_batch: int | None, path: str, title: str) -> None:
    """Two panels against users: aggregate tokens/s (with the builtin model's forward-only
    limit dashed) and p95 time to first token; one line per engine. matplotlib as the admin's
    plots use it (steering/admin/plots.py): headless, text kept as text."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        figure, (rate, first) = plt.subplots(1, 2, figsize=(8.6, 3.2), constrained_layout=True)
        users = sorted({r["clients"] for r in rows})
        for engine in dict.fromkeys(r["engine"] for r in rows):
            mine = [r for r in rows if r["engine"] == engine]
            xs = [r["clients"] for r in mine]
            rate.plot(xs, [r["tokens_per_s"] for r in mine], marker="o", label=engine)
            first.plot(xs, [r["ttft_s"]["p95"] if r["ttft_s"]["p95"] is not None else math.nan for r in mine],
                       marker="o", label=engine)
        if limits and max_batch:
            rate.plot(users, [limits.get(min(n, max_batch), math.nan) for n in users], linestyle="--",
                      color="grey", label="forward-only limit (builtin model)")
        rate.set(title="aggregate tokens/s", xlabel="concurrent users", ylabel="tokens/s")
        first.set(title="p95 time to first token", xlabel="concurrent users", ylabel="seconds")
        for axes in (rate, first):
            axes.set_xscale("log", base=2)
            axes.set_xticks(users, [str(n) for n in users])
            axes.set_ylim(bottom=0)
            axes.grid(alpha=0.3)
        rate.legend(fontsize=7, frameon=False)
        figure.suptitle(title, fontsize=8)
        figure.savefig(path, format="svg", facecolor="white")
        plt.close(figure)


async def curve_external(target: dict, levels: list[int], args) -> list[dict]:
    """A running server (--url): no engine switch, no memory figures (its process is not ours)."""
    return await curve(target, "external", levels, args, {}, 0)


def main(args) -> int:
    levels = [int(n) for n in args.clients.split(",")]
    engines = ["builtin", "vllm"] if args.engine == "both" else [args.engine]
    load_before = [round(x, 2) for x in os.getloadavg()]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if args.url:
        target = {"url": args.url, "cookies": args.cookie or [""], "origin": args.origin}
        served, limits, engines = {}, {}, ["external"]
        rows = asyncio.run(curve_external(target, levels, args))
    else:
        served, limits, rows = asyncio.run(run_servers(args, levels, engines))
    print(json.dumps({"settings": {
        "date": when, "commit": commit, "engines": engines, "clients": levels, "tokens": args.tokens,
        "rounds": args.rounds, "stagger_s": args.stagger, "omp_threads": args.omp_threads, "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "served": served,
    }}), flush=True)
    max_batch = {engine: s["max_batch"] for engine, s in served.items()}
    verdicts = checks(rows, max_batch)
    for verdict in verdicts:
        print(json.dumps(verdict), flush=True)
    print("\n" + table(rows), flush=True)
    if args.plot:
        dtypes = "/".join(sorted({s["dtype"] for s in served.values()})) or "?"
        plot(rows, limits, max_batch.get("builtin"), args.plot,
             f"SteerLab load curve, {when}, {dtypes}, {args.tokens} tokens, {args.rounds} rounds, "
             f"OMP {args.omp_threads}, load {load_before[0]} before")
        print(f"\nplot: {args.plot}", flush=True)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,16,32,64", help="the levels: concurrent users, comma-separated")
    parser.add_argument("--engine", choices=["builtin", "vllm", "both"], default="both")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="seconds between two clients' first messages (0: all at once)")
    parser.add_argument("--plot", metavar="FILE", help="write the curve as an SVG here")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"],
                        help="STEERLAB_DTYPE for the servers (default: the site's, bf16 where native)")
    parser.add_argument("--omp-threads", default=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)),
                        help="OMP_NUM_THREADS of the servers (default: this environment's, else the CPU count)")
    parser.add_argument("--compiled", action="store_true", help="vLLM with torch.compile (STEERLAB_VLLM_EAGER=0)")
    parser.add_argument("--no-limit", action="store_true", help="skip the forward-only limit")
    parser.add_argument("--builtin-python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--model-cache", default=str(ROOT / "var/vllm-models"))
    parser.add_argument("--url", help="a running server's ws://…/ws/chat/ (default: start one per engine)")
    parser.add_argument("--cookie", action="append",
                        help="with --url: a logged-in session cookie, sessionid=…; repeat it for several users "
                             "(one user may run only STEERLAB_MAX_PER_USER generations at once)")
    parser.add_argument("--origin", default="http://127.0.0.1:8000", help="with --url: the Origin header")
    sys.exit(main(parser.parse_args()))
