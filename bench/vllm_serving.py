"""Builtin engine vs vLLM, served over the websocket by the same client, in one run.

    OMP_NUM_THREADS=2 .venv-vllm/bin/python bench/vllm_serving.py [--tokens 64] [--rounds 4] [--compiled]

1. builtin: a fresh `BenchServer` (its own database, bootstrapped once; daphne with
   STEERLAB_ENGINE=builtin) run by --builtin-python (default .venv/bin/python, the deployed
   builtin engine with transformers 4): 1 user, then 8 users with 8 different formality
   strengths arriving at once (`bench.targets.together`, the websocket client of bench/targets.py).
2. vllm: daphne restarted on the same database with STEERLAB_ENGINE=vllm, run by --vllm-python
   (default .venv-vllm/bin/python); the same client, users and preferences. Each of its 8-user
   rounds is followed by a round of
3. vLLM's own throughput, unsteered, 8 requests (the same 8 chat prompts and token budget) in one
   `LLM.generate` call on the same converted weights, in a subprocess of --vllm-python started
   before the served vLLM and kept waiting between rounds (`OwnRuns`): once plain greedy, once
   with the sampling the chat asks vLLM for (CHAT_DEFAULTS' top_p and repetition penalty 1.1,
   which vLLM's CPU sampler pays for at every step). The ratios are medians of the per-round
   ratios: this shared machine's speed drifts by ±10 % between runs minutes apart.

Everything in --dtype (default: what the site serves, `auto`, bfloat16 on a CPU with native
bf16) on the CPU, greedy, so vLLM's own run is the limit at the served dtype; vLLM eager
(STEERLAB_VLLM_EAGER's default) unless --compiled, which compiles both vLLM runs (the served one
and vLLM's own) with torch.compile. Prints one JSON line per measurement, then the settings,
the load of the machine (it may be shared: read the ratios) and the ratios of the targets
(issue 25): vLLM 8 steered ≥ 85 % of vLLM's own unsteered 8 at the same sampling, and ≥ 2× the
builtin engine's 8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.server as bench_server  # noqa: E402
from bench.chat_load import PROMPTS  # noqa: E402
from bench.targets import together  # noqa: E402

VLLM_OWN = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "steerlab_site.settings")
from steering.vllm_inference.engine import configure_environment
configure_environment()
from steering.engine import load_model
from steering.vllm_inference.weights import vllm_model_dir
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
prompts, tokens, cache, eager = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "eager"
dtype = sys.argv[5]
loaded = load_model("embedded", device="cpu", dtype=dtype)
llm = LLM(model=str(vllm_model_dir(loaded, "embedded", cache)), dtype=dtype, enforce_eager=eager,
          max_num_seqs=16, max_model_len=2048, seed=0)
from steering.engine.request import CHAT_DEFAULTS
stops = sorted(loaded.stop_ids)
inputs = [TokensPrompt(prompt_token_ids=loaded.chat_ids(p)) for p in prompts]
llm.generate(inputs[:1], SamplingParams(max_tokens=8, temperature=0, detokenize=False), use_tqdm=False)  # warm-up
# plain: greedy and nothing else; served: what the chat asks vLLM for on a greedy websocket
# request (CHAT_DEFAULTS' top_p and repetition penalty, as VllmScheduler._add passes them).
kinds = {
    "plain": SamplingParams(max_tokens=tokens, temperature=0, stop_token_ids=stops, detokenize=False),
    "served_sampling": SamplingParams(max_tokens=tokens, temperature=0, top_p=CHAT_DEFAULTS.top_p,
                             repetition_penalty=CHAT_DEFAULTS.repetition_penalty, stop_token_ids=stops, detokenize=False),
}
print("READY", flush=True)
for line in sys.stdin:  # one round per line: the bench interleaves these with the served rounds
    kind = line.strip()
    start = time.perf_counter()
    outputs = llm.generate(inputs, kinds[kind], use_tqdm=False)
    wall = time.perf_counter() - start
    print("RESULT=" + json.dumps({"kind": kind, "tokens_per_s": sum(len(o.outputs[0].token_ids) for o in outputs) / wall}),
          flush=True)
"""


# The bench's one vector set: formality only, from 24 + 24 shipped examples (as tests/ws do),
# registered as the shared default. `bootstrap` computes every shipped dimension and took over
# 15 minutes on the shared 2-core machine; what is measured here needs one preference.
REGISTER_FORMALITY = """
from steering.data import catalog
from steering.engine import compute_vectors
from steering.models import PreferenceDimension
from steering.services import vector_sets
from steering.serving import runtime
positive, negative = catalog.examples("formality")
vectors = compute_vectors(runtime.site_model(), {"formality": (positive[:24], negative[:24])},
                          labels={"formality": ["Casual", "Formal"]})
PreferenceDimension.objects.get_or_create(name="formality", defaults={"negative_label": "Casual", "positive_label": "Formal"})
vector_sets.vector_set_register(vectors=vectors, name="default")
print("registered")
"""


class QuickBenchServer(bench_server.BenchServer):
    """`BenchServer` with the formality vector set registered instead of `bootstrap`."""

    def __enter__(self):
        print("bench: migrating a fresh database and computing the formality vectors …", file=sys.stderr)
        self.manage("migrate", "--noinput")
        self.manage("shell", "-c", REGISTER_FORMALITY)
        out = self.manage("shell", "-c", bench_server.MAKE_USERS.format(n=self.users))
        users = json.loads(out.split("USERS=", 1)[1])
        self.cookies = [f"sessionid={u['session']}" for u in users]
        self.tokens = [u["token"] for u in users]
        return self


def emit(name: str, **values) -> None:
    print(json.dumps({"measure": name, **values}), flush=True)


def restart(server, python: str, env: dict) -> float:
    """Serve the bench's one database with another interpreter and engine: daphne restarted,
    the bootstrapped users and vector set kept (bootstrapping twice costs minutes)."""
    import subprocess as sp

    if getattr(server, "process", None) is not None and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(30)
    server.env.update(env)
    started = time.perf_counter()
    server.process = sp.Popen(
        [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(server.port),
         "--websocket-max-message-size", "262144", "--websocket-max-frame-size", "262144",
         "steerlab_site.asgi:application"],
        cwd=ROOT, env=server.env, stdout=None if server.log else sp.DEVNULL, stderr=None if server.log else sp.DEVNULL,
    )
    server.wait_healthy(600)
    return time.perf_counter() - started


class OwnRuns:
    """vLLM's own `LLM.generate` of the 8 prompts, in a subprocess of --vllm-python that
    answers one round per request, so its rounds alternate with the served ones: on a shared
    machine whose speed drifts by ±10 % from minute to minute, each ratio is of two runs taken
    seconds apart."""

    KINDS = ("plain", "served_sampling")  # VLLM_OWN's sampling settings

    def __init__(self, args):
        self.process = subprocess.Popen(
            [args.vllm_python, "-c", VLLM_OWN, json.dumps(PROMPTS[:8]), str(args.tokens), args.model_cache,
             "compiled" if args.compiled else "eager", args.dtype],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
        )
        self._read_until("READY")

    def _read_until(self, prefix: str) -> str:
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"vLLM's own run failed:\n{self.process.stderr.read()[-3000:]}")

    def round(self, kind: str) -> float:
        self.process.stdin.write(kind + "\n")
        self.process.stdin.flush()
        return json.loads(self._read_until("RESULT=").split("=", 1)[1])["tokens_per_s"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(60)


async def serve(server, python: str, engine: str, args, own: OwnRuns | None = None) -> dict:
    """One engine served: 1 user, then 8 users; with `own`, each 8-user round is followed by a
    round of vLLM's own generate, plain greedy and with the served sampling."""
    env = {"STEERLAB_ENGINE": engine, "STEERLAB_VLLM_EAGER": "0" if args.compiled else "1"}
    started = time.perf_counter()
    restart(server, python, env)
    await together(server, 1, 8, 1)  # warm-up: model load, vLLM start-up, first-use costs
    ready = time.perf_counter() - started
    await together(server, 8, 8, 1)  # and a batch of 8's first-use costs (the first such round ran 0.75× the rest)
    one = await together(server, 1, args.tokens, args.rounds)
    rounds = []
    for _ in range(args.rounds):
        served = (await together(server, 8, args.tokens, 1))["tokens_per_s"]
        rounds.append({"served": served, **({kind: own.round(kind) for kind in OwnRuns.KINDS} if own else {})})
    eight = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    result = {"engine": engine, "python": python, "ready_s": round(ready, 1), "one_user": one,
              "eight_users_tokens_per_s": eight["served"], "rounds": rounds}
    if own:
        for kind in OwnRuns.KINDS:
            result[f"own_{kind}_tokens_per_s"] = eight[kind]
            result[f"over_own_{kind}"] = statistics.median(r["served"] / r[kind] for r in rounds)
    emit("served", **result)
    return result


async def both(args) -> tuple[dict, dict]:
    # One database for both engines, bootstrapped by the builtin engine's interpreter. The
    # range search (generations per dimension) is off to keep the bootstrap short; it only
    # changes the strength unit, not what is measured here.
    bench_server.PYTHON = args.builtin_python
    env = {"STEERLAB_DTYPE": args.dtype, "STEERLAB_DEVICE": "cpu", "STEERLAB_RANGE_SEARCH": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "STEERLAB_VLLM_MODEL_DIR": args.model_cache,
           "STEERLAB_STREAM_INTERVAL_MS": str(args.stream_interval_ms)}
    with QuickBenchServer(users=8, env=env) as server:
        builtin = await serve(server, args.builtin_python, "builtin", args)
        own = OwnRuns(args)  # started before the served vLLM, so its start-up does not count in ready_s
        try:
            vllm = await serve(server, args.vllm_python, "vllm", args, own)
        finally:
            own.close()
    return builtin, vllm


def served_dtype(name: str) -> str:
    """The dtype's name, `auto` resolved as the site resolves it on this CPU."""
    import torch

    from steering.engine.loading import DTYPES, resolve_dtype

    chosen = resolve_dtype(name, torch.device("cpu"))
    return next(key for key, value in DTYPES.items() if value == chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--builtin-python", default=str(ROOT / ".venv/bin/python"))
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--model-cache", default=str(ROOT / "var/vllm-models"))
    parser.add_argument("--compiled", action="store_true", help="vLLM with torch.compile (STEERLAB_VLLM_EAGER=0)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="what every engine runs in; auto: what the site serves on this CPU")
    parser.add_argument("--stream-interval-ms", type=int, default=100,
                        help="STEERLAB_STREAM_INTERVAL_MS for both engines (the site's default 100; 0: a frame per token)")
    args = parser.parse_args()
    args.dtype = served_dtype(args.dtype)
    load_before = os.getloadavg()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    builtin, vllm = asyncio.run(both(args))
    load_after = os.getloadavg()
    v8, b8 = vllm["eight_users_tokens_per_s"], builtin["eight_users_tokens_per_s"]
    emit("settings", date=when, tokens=args.tokens, rounds=args.rounds, dtype=args.dtype, device="cpu",
         omp_threads=os.environ.get("OMP_NUM_THREADS", "2"), cpus=os.cpu_count(), vllm_eager=not args.compiled,
         stream_interval_ms=args.stream_interval_ms,
         loadavg_before=[round(x, 2) for x in load_before], loadavg_after=[round(x, 2) for x in load_after])
    emit("ratios",
         builtin_1=round(builtin["one_user"]["tokens_per_s"], 1), builtin_8=round(b8, 1),
         vllm_1=round(vllm["one_user"]["tokens_per_s"], 1), vllm_8_steered=round(v8, 1),
         vllm_own_8_unsteered_served_sampling=round(vllm["own_served_sampling_tokens_per_s"], 1),
         vllm_own_8_unsteered_plain_greedy=round(vllm["own_plain_tokens_per_s"], 1),
         # medians of the per-round ratios (each served round beside the own rounds after it)
         vllm_8_steered_over_own_unsteered=round(vllm["over_own_served_sampling"], 3),
         vllm_8_steered_over_own_plain_greedy=round(vllm["over_own_plain"], 3),
         vllm_8_over_builtin_8=round(v8 / b8, 2),
         targets={"steered_over_unsteered": ">= 0.85", "vllm_over_builtin": ">= 2"})


if __name__ == "__main__":
    main()
