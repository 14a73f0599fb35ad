"""vLLM with per-request steering on a GPU, at a shape that matters: an 8B Llama, steered and
unsteered, for 8 and 64 distinct steerings (issue 25, item 5). Ready for a machine with an
NVIDIA GPU and the CUDA build of vLLM (`pip install vllm`, docs/vllm.md); nothing is downloaded.

    .venv-vllm/bin/python bench/vllm_gpu.py [--shape llama-8b] [--batches 8,64] [--tokens 128]
                                            [--rounds 3] [--eager] [--dtype bfloat16]

The model is Llama-3-8B's shape (32 layers, hidden 4096, 32 heads / 8 KV heads, MLP 14336)
written as a config only; vLLM fills it with random weights (`load_format="dummy"`), so the
speed is the real model's, the text is noise. The vocabulary and tokenizer are the embedded
SmolLM2's (49,152 tokens instead of 128,256: a smaller LM head, noted in the output). CUDA
graphs are on unless --eager.

For each batch size B: B requests of different prompts, greedy, every request runs --tokens
(no stop tokens), through SteerLab's `VllmScheduler` exactly as the site serves; unsteered, then
with B distinct steerings on every layer (random directions, each its own), in alternating
rounds; medians of --rounds. Prints one JSON line per round, then the settings (GPU, vLLM and
torch versions, date) and the steered/unsteered ratios beside EasySteer's published reference
(1.5B model, one Blackwell GPU, batch 256: 25,310 tok/s steered on every layer vs 33,217
unsteered; 15,851 tok/s with 32 distinct steerings).

`--shape tiny` runs the same path on a 2-layer toy shape, on a CPU too: a smoke test of this
script, not a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.chat_load import PROMPTS  # noqa: E402
from steering.engine import GenerationParams, GenerationRequest, LoadedModel, load_model  # noqa: E402

SHAPES = {
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192),
    # head size 32: the smallest vLLM's CPU attention takes
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=2048),
}
EASYSTEER = {"model": "1.5B", "gpu": "one Blackwell", "batch": 256, "unsteered_tok_s": 33217,
             "steered_every_layer_tok_s": 25310, "distinct_32_tok_s": 15851}


def model_dir(shape: str, tokenizer, root: Path) -> tuple[Path, LoadedModel]:
    """A directory vLLM loads with load_format="dummy" (the shape's config and a tokenizer), and
    the model as the scheduler sees it: a shell on the meta device (shapes, no memory) with the
    tokenizer, which gives the steering table its layers and width."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory = root / shape
    directory.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                         torch_dtype="bfloat16", **SHAPES[shape])
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with torch.device("meta"):
        shell = LlamaForCausalLM(config)
    return directory, LoadedModel(model=shell, tokenizer=tokenizer, model_id=f"random/{shape}")


def prompts(count: int, loaded) -> list[list[int]]:
    """`count` different chat prompts (vLLM's prefix cache must not serve one from another)."""
    return [loaded.chat_ids(f"{PROMPTS[i % len(PROMPTS)]} (request {i})") for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-8b", choices=sorted(SHAPES))
    parser.add_argument("--batches", default="8,64")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    from steering.vllm_inference.engine import VllmScheduler

    # The embedded model gives the tokenizer and its chat template, nothing else.
    tokenizer = load_model("embedded", device="cpu", dtype="float32").tokenizer
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        directory, loaded = model_dir(args.shape, tokenizer, Path(tmp))
        loaded.stop_ids = frozenset()  # every request runs --tokens: equal work in both arms
        scheduler = VllmScheduler(
            loaded, directory, max_batch=max(batches), max_queue=2 * max(batches),
            max_per_user=None, steered_rows=max(batches), eager=args.eager, dtype=args.dtype, load_format="dummy",
        )
        generator = torch.Generator().manual_seed(0)
        layers = range(shape["num_hidden_layers"])

        def steering(count: int) -> list[dict[int, torch.Tensor]]:
            out = []
            for _ in range(count):  # each request its own direction, on every layer
                direction = torch.randn(shape["hidden_size"], generator=generator)
                out.append({layer: direction / direction.norm() for layer in layers})
            return out

        def arm(batch: int, steered: bool) -> float:
            steerings = steering(batch) if steered else [{}] * batch
            requests = [GenerationRequest(prompt_ids=ids, params=GenerationParams(max_new_tokens=args.tokens),
                                          steering=steerings[i]) for i, ids in enumerate(prompts(batch, loaded))]
            start = time.perf_counter()
            tickets = scheduler.complete(requests)
            return sum(t.tokens for t in tickets) / (time.perf_counter() - start)

        results = {}
        for batch in batches:
            arm(batch, False)  # warm-up: CUDA graphs for this batch, caches
            rates = {"unsteered": [], "steered": []}
            for i in range(args.rounds):
                for name in (("unsteered", "steered") if i % 2 == 0 else ("steered", "unsteered")):
                    rates[name].append(arm(batch, name == "steered"))
                print(json.dumps({"batch": batch, "round": i, **{k: round(v[-1], 1) for k, v in rates.items()}}), flush=True)
            u, s = statistics.median(rates["unsteered"]), statistics.median(rates["steered"])
            results[batch] = {"unsteered_tok_s": round(u, 1), "steered_tok_s": round(s, 1),
                              "steered_over_unsteered": round(s / u, 3)}
        scheduler.close()

    import vllm

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({"settings": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device, "vllm": vllm.__version__,
        "torch": torch.__version__, "shape": args.shape, **shape, "vocab": len(loaded.tokenizer),
        "weights": "random (load_format=dummy)", "dtype": args.dtype, "cuda_graphs": not args.eager,
        "tokens": args.tokens, "rounds": args.rounds, "steered_layers": "all",
    }}), flush=True)
    print(json.dumps({"results": {f"{b} distinct steerings": r for b, r in results.items()},
                      "reference_easysteer": EASYSTEER}), flush=True)


if __name__ == "__main__":
    main()
