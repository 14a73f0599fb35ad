"""The vLLM engine with tensor parallelism (`tensor_parallel_size=2`, two CPU worker processes
over gloo): each rank adds each row's steering, so the texts are TP=1's.

On the tiny Llama of `build_tiny_llama_for_vllm` (the embedded SmolLM2's 9 attention heads do
not split in two), float32, eager. The generations run in a process of their own
(`tests.vllm.tensor_parallel_run`, which says why); these tests read what it wrote. Its ranks
run one OpenMP thread each, unbound (VLLM_CPU_OMP_THREADS_BIND=nobind), as the CI machine has
2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vllm.conftest import SKIP_REASON

pytest.importorskip("vllm", reason=SKIP_REASON)

from tests.vllm.tensor_parallel_run import ANSWER_ONLY, PROMPTS, UNSTEERED  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """{"1": TP=1's results, "2": TP=2's} (see tensor_parallel_run.generate)."""
    out = tmp_path_factory.mktemp("tp") / "runs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    done = subprocess.run([sys.executable, "-m", "tests.vllm.tensor_parallel_run", str(out)], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, "the tensor-parallel run failed:\n" + done.stdout[-6000:]
    return json.loads(out.read_text())


def test_it_runs_on_two_ranks_each_adding_the_steering(runs):
    ranks = runs["2"]["ranks"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    # Each rank saw every pass and steered the same ones: the rows reached both processes.
    assert ranks[0]["passes"] == ranks[1]["passes"] > 0
    assert ranks[0]["steered_passes"] == ranks[1]["steered_passes"] > 0
    assert [rank["rank"] for rank in runs["1"]["ranks"]] == [0]


def test_steered_texts_equal_the_tp1_texts(runs):
    for way in ("alone", "together"):
        for i, (one, two) in enumerate(zip(runs["1"][way], runs["2"][way])):
            assert two["tokens"] == one["tokens"], (way, i)
            assert two["text"] == one["text"], (way, i)


def test_each_rows_first_step_distribution_is_tp1s(runs):
    for i, (one, two) in enumerate(zip(runs["1"]["together"], runs["2"]["together"])):
        assert one["first_logprobs"].keys() == two["first_logprobs"].keys(), i
        for token, logprob in two["first_logprobs"].items():
            assert logprob == pytest.approx(one["first_logprobs"][token], abs=1e-4), (i, token)


def test_a_steered_batch_keeps_each_rows_own_text(runs):
    tp2 = runs["2"]
    assert [r["tokens"] for r in tp2["together"]] == [r["tokens"] for r in tp2["alone"]]
    texts, plain = [r["text"] for r in tp2["alone"]], [r["text"] for r in tp2["plain"]]
    assert all(texts)
    for i in range(len(PROMPTS)):
        if i in UNSTEERED:
            assert texts[i] == plain[i], i
        else:  # steered (the prompt and answer, or the answer only): not the plain text
            assert texts[i] != plain[i], i
    assert ANSWER_ONLY and not ANSWER_ONLY & UNSTEERED


def test_every_rank_zeroes_a_freed_row(runs):
    """Checked after the unsteered runs that followed the steered ones: a runner hears that a
    request ended with the next step's batch."""
    for size in ("1", "2"):
        assert runs[size]["free_rows"] == runs[size]["rows"]
        for rank in runs[size]["ranks"]:
            assert rank["bound"] == 0 and rank["nonzero_rows"] == [], rank
