"""The scale-out deployment under stress: 2 daphne processes, 2 `manage.py inference_worker`
processes (STEERLAB_INFERENCE=worker, Redis), and 8 websocket users with 8 different formality
strengths, each asking for greedy tokens at the same time.

    .venv/bin/python bench/worker_failover.py [--rounds 3] [--tokens 32] [--kill] [--model tiny]

First each prompt is asked alone, one at a time (its solo text). Then each round sends the 8
at once, half through each daphne, and checks every answer: a **duplicate** is an answer
with more token frames than tokens (two workers streamed into it), a **mismatch** a text
unlike its solo text, an **error** an error frame. With `--kill` the worker holding the most
requests is SIGKILLed once every stream has sent a few tokens, in every round (a fresh one is
started for the next round), and the answers must still complete, equal to their solo texts.
`--model tiny` serves the suite's tiny random Llama instead of SmolLM2 (delivery does not
need real text, and a busy 2-core machine runs SmolLM2 in 4 processes very slowly).

Prints one JSON line per round and a summary. Uses Redis at REDIS_URL (default
redis://127.0.0.1:6379/13), which it flushes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets  # noqa: E402

from bench.chat_load import PROMPTS  # noqa: E402
from bench.server import PYTHON, ROOT, BenchServer, free_port  # noqa: E402

SETUP = """
from steering.data import catalog
from steering.engine import compute_vectors
from steering.models import PreferenceDimension
from steering.serving.runtime import site_model
from steering.services import vector_sets
positive, negative = catalog.examples("formality")
vectors = compute_vectors(site_model(), {"formality": (positive[:24], negative[:24])},
                          labels={"formality": ["Casual", "Formal"]})
PreferenceDimension.objects.get_or_create(name="formality", defaults=dict(negative_label="Casual", positive_label="Formal"))
print("VECTOR_SET=", vector_sets.vector_set_register(vectors=vectors, name="default").pk)
"""


class Deployment(BenchServer):
    """BenchServer's database and users, served by `webs` daphne processes in worker mode and
    `workers` inference workers."""

    def __init__(self, *, users: int, redis_url: str, model: str, webs: int = 2, workers: int = 2) -> None:
        super().__init__(users=users, env={"STEERLAB_INFERENCE": "worker", "REDIS_URL": redis_url,
                                           "STEERLAB_WORKER_SILENCE_S": "3", "OMP_NUM_THREADS": "1"})
        if model == "tiny":
            sys.path.insert(0, str(ROOT))
            from tests.tiny_models import build_tiny

            loaded = build_tiny("llama")
            directory = f"{self.tmp.name}/tiny-llama"
            loaded.model.save_pretrained(directory)
            loaded.tokenizer.save_pretrained(directory)
            self.env["STEERLAB_MODEL"] = directory
            self.env["STEERLAB_DEVICE"] = "cpu"
        self.webs, self.workers = webs, workers
        self.daphnes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.worker_processes: list[subprocess.Popen] = []

    def __enter__(self) -> Deployment:
        print("bench: migrating, computing formality vectors …", file=sys.stderr)
        self.manage("migrate", "--noinput")
        self.manage("shell", "-c", SETUP)
        from bench.server import MAKE_USERS

        out = self.manage("shell", "-c", MAKE_USERS.format(n=self.users))
        users = json.loads(out.split("USERS=", 1)[1])
        self.cookies = [f"sessionid={u['session']}" for u in users]
        for _ in range(self.workers):
            self.start_worker()
        for _ in range(self.webs):
            port = free_port()
            self.ports.append(port)
            self.daphnes.append(subprocess.Popen(
                [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "steerlab_site.asgi:application"],
                cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for worker in self.worker_processes:
            self.wait_ready(worker)
        print("bench: 2 workers ready", file=sys.stderr, flush=True)
        return self

    def start_worker(self) -> subprocess.Popen:
        worker = subprocess.Popen([PYTHON, "manage.py", "inference_worker"], cwd=ROOT, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.worker_processes.append(worker)
        return worker

    @staticmethod
    def wait_ready(worker: subprocess.Popen, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        for line in worker.stdout:
            if "Inference worker ready" in line:
                # Keep draining its output, or a full pipe would block the worker.
                import threading

                threading.Thread(target=lambda: [None for _ in worker.stdout], daemon=True).start()
                return
            if time.time() > deadline:
                break
        raise RuntimeError("an inference worker did not start")

    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws/chat/" for port in self.ports]

    def __exit__(self, *exc) -> None:
        for process in [*self.daphnes, *self.worker_processes]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.daphnes, *self.worker_processes]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.tmp.cleanup()


async def ask(url: str, cookie: str, index: int, tokens: int, connect_timeout: float = 120, on_token=None) -> dict:
    strength = round(-1 + 2 * index / 7, 2)
    deadline = time.time() + connect_timeout
    while True:  # daphne may still be starting
        try:
            ws = await websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"},
                                          open_timeout=60)
            break
        except OSError:
            if time.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    async with ws:
        # Greedy (the chat's default samples): texts are compared across runs and with the engine alone.
        await ws.send(json.dumps({"type": "generate", "prompt": PROMPTS[index], "max_new_tokens": tokens, "temperature": 0,
                                  "preferences": {"formality": strength}}))
        token_frames, text = 0, ""
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=300))
            if frame["type"] == "token":
                token_frames += 1
                text += frame["text"]
                if on_token is not None:
                    on_token(index, token_frames)
            elif frame["type"] == "done":
                return {"text": frame["text"], "streamed": text, "tokens": frame["stats"]["tokens"],
                        "token_frames": token_frames, "error": None}
            elif frame["type"] == "error":
                return {"text": text, "streamed": text, "tokens": 0, "token_frames": token_frames,
                        "error": frame["code"]}


def pending_by_pid(redis_url: str) -> dict[int, int]:
    """Requests each worker process holds now (the new stream queue names consumers
    `<host>-<pid>-…`); empty for a deployment without it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    counts: dict[int, int] = {}
    for key in client.scan_iter(match="steerlab:inference:requests"):  # this deployment's queue only
        for group in client.xinfo_groups(key):
            for consumer in client.xinfo_consumers(key, group["name"]):
                pid = int(consumer["name"].decode().split("-")[-2])
                counts[pid] = counts.get(pid, 0) + consumer["pending"]
    return counts


async def kill_busiest(deployment: Deployment, redis_url: str, under_way: asyncio.Event) -> dict:
    await under_way.wait()
    counts = pending_by_pid(redis_url)
    pid = max(counts, key=counts.get) if counts else deployment.worker_processes[0].pid
    os.kill(pid, signal.SIGKILL)
    print(f"bench: SIGKILLed worker {pid} holding {counts.get(pid)} of {sum(counts.values())} requests",
          file=sys.stderr)
    return {"killed_pid": pid, "it_held": counts.get(pid), "held_in_all": sum(counts.values())}


async def main(args) -> None:
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    with Deployment(users=8, redis_url=args.redis_url, model=args.model) as deployment:
        urls = deployment.ws_urls()
        solo = []
        for i in range(8):
            answer = await ask(urls[i % 2], deployment.cookies[i], i, args.tokens)
            print(f"bench: solo {i}: {answer['error'] or 'ok'}, {answer['tokens']} tokens", file=sys.stderr, flush=True)
            solo.append(answer["text"])
        print(json.dumps({"solo_errors": sum(1 for t in solo if not t)}), flush=True)
        totals = {"rounds": 0, "answers": 0, "duplicates": 0, "mismatches": 0, "errors": 0}
        for round_ in range(args.rounds):
            seen, under_way = [0] * 8, asyncio.Event()

            def on_token(index, frames, seen=seen, under_way=under_way):
                seen[index] = frames
                if min(seen) >= args.kill_after_tokens:
                    under_way.set()

            jobs = [ask(urls[i % 2], deployment.cookies[i], i, args.tokens, on_token=on_token) for i in range(8)]
            killing = None
            if args.kill:
                killing = asyncio.ensure_future(kill_busiest(deployment, args.redis_url, under_way))
            started = time.perf_counter()
            answers = await asyncio.gather(*jobs)
            outcome = {
                "round": round_ + 1,
                "wall_s": round(time.perf_counter() - started, 1),
                "duplicates": sum(a["token_frames"] > a["tokens"] + 1 for a in answers if not a["error"]),
                "mismatches": sum(a["text"] != solo[i] for i, a in enumerate(answers) if not a["error"]),
                "errors": [a["error"] for a in answers if a["error"]],
                "completed": sum(1 for a in answers if not a["error"]),
            }
            if killing is not None:
                outcome.update(await killing)
                deployment.wait_ready(deployment.start_worker())  # two workers again for the next round
            print(json.dumps(outcome), flush=True)
            totals["rounds"] += 1
            totals["answers"] += len(answers)
            totals["duplicates"] += outcome["duplicates"]
            totals["mismatches"] += outcome["mismatches"]
            totals["errors"] += len(outcome["errors"])
            for i, a in enumerate(answers):
                if a["text"] != solo[i] and args.verbose:
                    print(f"  user {i}: {a['text']!r}\n  solo:   {solo[i]!r}", file=sys.stderr)
        stats = redis.Redis.from_url(args.redis_url).hgetall("steerlab:inference:stats")
        totals["claims_and_resumptions"] = {k.decode(): int(v) for k, v in stats.items()}  # absent before the stream queue
        print(json.dumps({"summary": totals}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--kill", action="store_true", help="SIGKILL the busiest worker mid-stream each round")
    parser.add_argument("--kill-after-tokens", type=int, default=3,
                        help="kill once every stream has sent this many token frames")
    parser.add_argument("--model", default="embedded", help="embedded (SmolLM2) or tiny")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--verbose", action="store_true")
    asyncio.run(main(parser.parse_args()))
