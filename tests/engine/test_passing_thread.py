"""The model loads in a thread that ends (`loading.in_passing_thread`), and an engine's thread
claims the cores (`loading.claim_cores`): a thread that ran a parallel torch op keeps its
OpenMP workers while it lives, and with more of them than cores every team's forward passes
slow down (bench/omp_teams.py). Checked in subprocesses with two OpenMP threads, whatever this
test run's own thread settings are."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

from steering.engine import load_model, loading
from tests.tiny_models import build_tiny

COUNT_WORKERS = """
import os, time, torch
from steering.engine.loading import in_passing_thread
def threads(): return len(os.listdir("/proc/self/task"))
def matmul(): torch.ones(512, 512) @ torch.ones(512, 512)
before = threads()
in_passing_thread(matmul)
# The ended thread and its team's workers leave the kernel's list a moment after the join
# returns (on a loaded machine, later): wait for that, a few seconds at most.
deadline = time.monotonic() + 10
while threads() > before and time.monotonic() < deadline:
    time.sleep(0.05)
after_passing = threads()
matmul()
after_here = threads()
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print(before, after_passing, after_here, ",".join(names))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_a_passing_thread_leaves_no_openmp_workers_behind_where_the_calling_thread_would():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", COUNT_WORKERS], capture_output=True, text=True, env=env, check=True)
    before, after_passing, after_here, names = out.stdout.split()
    before, after_passing, after_here = int(before), int(after_passing), int(after_here)
    assert after_passing == before, f"threads left: {names}"
    assert after_here > before  # the same op on the calling thread keeps a worker: the count can tell


def test_load_model_runs_the_loading_in_another_thread_and_returns_its_model(tmp_path, monkeypatch):
    tiny = build_tiny("llama", dtype=torch.float32)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    seen = []
    real = loading._load_model
    monkeypatch.setattr(loading, "_load_model", lambda *args: seen.append(threading.current_thread()) or real(*args))
    loaded = load_model(str(tmp_path), device="cpu")
    assert seen and seen[0] is not threading.current_thread() and not seen[0].is_alive()
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(loaded.model(ids).logits, tiny.model(ids).logits, atol=1e-5)


def test_an_error_in_the_passing_thread_is_raised_to_the_caller():
    def fail():
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        loading.in_passing_thread(fail)


ENGINE_CLAIMS = """
import json, os, threading, time, torch
from steering.engine import GenerationParams, GenerationRequest, SteeringHooks
from steering.inference import Scheduler
from tests.tiny_models import build_tiny
def threads(): return len(os.listdir("/proc/self/task"))
loaded = build_tiny("llama", dtype=torch.float32)
engine_reads = []
loaded.layers[0].register_forward_pre_hook(lambda module, args: engine_reads.append(torch.get_num_threads()))
with Scheduler(loaded, SteeringHooks(loaded.layers), max_per_user=None) as scheduler:
    ticket = scheduler.submit(GenerationRequest(prompt_ids=[5, 6, 7], params=GenerationParams(max_new_tokens=3)))
    assert ticket.wait(60) and ticket.finish == "length", ticket.finish
    # A request's thread that lives on, and runs a parallel op (a 6-dimension vector set's size) after the engine started.
    done, end, reads = threading.Event(), threading.Event(), []
    def request_thread():
        reads.append(torch.get_num_threads())
        (torch.ones(6, 30, 576) * 2).to(torch.bfloat16)
        done.set()
        end.wait()
    before = threads()
    thread = threading.Thread(target=request_thread)
    thread.start()
    done.wait(60)
    time.sleep(0.2)
    during = threads()
    end.set()
    thread.join()
print(json.dumps({"engine": sorted(set(engine_reads)), "request": reads, "added": during - before}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_an_engine_keeps_the_cores_and_a_later_request_thread_runs_its_torch_on_one():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", ENGINE_CLAIMS], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["engine"] == [2]  # every forward pass of the engine's thread ran on both
    assert found["request"] == [1]
    assert found["added"] == 1, "the request thread itself, and no OpenMP worker of its own"
