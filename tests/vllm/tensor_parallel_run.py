"""The tensor-parallel test's generations, in a process of its own (tests/vllm/test_vllm_tensor_parallel.py
starts it): `python -m tests.vllm.tensor_parallel_run OUT.json`.

vLLM keeps its distributed state (the process group, the tensor-parallel group) per process,
and an in-process engine tears it down when it shuts down; the suite's own engine (the
embedded model, in-process) shares the pytest process, so the TP=1 and TP=2 engines compared
here get a process of their own.

On the tiny Llama (`build_tiny_llama_for_vllm`, float32, eager), for tensor_parallel 1 then 2,
one `VllmScheduler` each: 8 requests (2 unsteered, 5 each with its own steering, 1 steering
only its answer) generated each alone, then all together (which also gives each row's
first-step log-probabilities), then each prompt alone unsteered. Then each rank's hook state:
by then each rank has heard that the steered requests ended (vLLM tells its runners with the
next step's batch). Written as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

PROMPTS = [
    "I would be delighted to assist you.",
    "Sure thing, happy to help!",
    "The quarterly report indicates revenue.",
    "yeah the trip was awesome",
    "Please find attached the documents.",
    "hey what's up, wanna grab coffee?",
    "I would be delighted, lol.",
    "Sure, the report is attached.",
]
UNSTEERED = {0, 4}
ANSWER_ONLY = {5}
TOKENS = 16
LOGPROBS = 10


def steerings(loaded) -> list[dict]:
    """Per request: {} or a random direction per layer whose norm is that layer's mean
    residual norm (distinct seeds: distinct users)."""
    import torch

    from steering.engine import record_activations

    _, norms = record_activations(loaded, PROMPTS)
    result = []
    for i in range(len(PROMPTS)):
        if i in UNSTEERED:
            result.append({})
            continue
        generator = torch.Generator().manual_seed(100 + i)
        direction = torch.randn(loaded.hidden_size, generator=generator)
        direction /= direction.norm()
        result.append({layer: direction * float(norms[layer]) for layer in range(1, loaded.num_layers)})
    return result


def generate(scheduler, loaded, steering: list[dict]) -> dict:
    from steering.engine import GenerationParams, GenerationRequest

    def requests(steered=True):
        return [
            GenerationRequest(prompt_ids=loaded.chat_ids(prompt), params=GenerationParams(max_new_tokens=TOKENS),
                              steering=steering[i] if steered else {}, steer_prompt=i not in ANSWER_ONLY)
            for i, prompt in enumerate(PROMPTS)
        ]

    def run(batch, **kwargs):
        tickets = [scheduler.submit(r, **kwargs) for r in batch]
        for ticket in tickets:
            if not ticket.wait(300) or ticket.finish not in ("stop", "length"):
                raise RuntimeError(f"a generation failed: {ticket.finish} {ticket.error}")
        return tickets

    def tokens(ticket):
        return [e.token_id for e in ticket if e.token_id is not None and e.finish != "stop"]

    alone = [run([r])[0] for r in requests()]
    together = run(requests(), logprobs=LOGPROBS)
    plain = [run([r])[0] for r in requests(steered=False)]
    return {
        "alone": [{"text": t.text, "tokens": tokens(t)} for t in alone],
        "together": [{"text": t.text, "tokens": tokens(t),
                      "first_logprobs": {str(k): v for k, v in t.logprobs[0].items()}} for t in together],
        "plain": [{"text": t.text, "tokens": tokens(t)} for t in plain],
        "ranks": scheduler.runner_state(),
        "free_rows": scheduler.table.free_rows,
        "rows": scheduler.table.rows,
    }


def main(out: Path) -> None:
    from steering.vllm_inference.engine import VllmScheduler
    from tests.tiny_models import build_tiny_llama_for_vllm

    loaded = build_tiny_llama_for_vllm()
    steering = steerings(loaded)
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        loaded.model.save_pretrained(directory)
        loaded.tokenizer.save_pretrained(directory)
        for size in (1, 2):
            scheduler = VllmScheduler(loaded, directory, tensor_parallel=size, max_batch=8, steered_rows=8,
                                      max_per_user=None, max_model_len=256, name=f"tp{size}")
            try:
                results[str(size)] = generate(scheduler, loaded, steering)
            finally:
                scheduler.close()
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
