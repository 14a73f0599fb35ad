"""Tiny randomly initialised models, one per architecture family, built from a config in
the test process: nothing is downloaded, and each builds in milliseconds."""

from __future__ import annotations

import contextlib
import time

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModelForCausalLM,
    FalconConfig,
    Gemma2Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
    StableLmConfig,
)

from steering.engine import LoadedModel

CORPUS = [
    "I would be delighted to assist you with this matter at your earliest convenience.",
    "Sure thing, happy to help, just lemme know what you need!",
    "The quarterly report indicates a considerable improvement in revenue.",
    "yeah the trip was awesome, we ate so much pizza lol",
    "Please find attached the documents you requested yesterday.",
    "hey what's up, wanna grab coffee later?",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
NUM_LAYERS = 4
SMALL = dict(num_hidden_layers=NUM_LAYERS, num_attention_heads=4, max_position_embeddings=256)


def make_tokenizer() -> PreTrainedTokenizerFast:
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        CORPUS * 3, vocab_size=400, min_frequency=1, show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_end|>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trainer._tokenizer, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def family_configs(vocab: int) -> dict:
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, **SMALL)
    return {
        "llama": LlamaConfig(num_key_value_heads=2, **common),
        "qwen2": Qwen2Config(num_key_value_heads=2, **common),
        "gemma2": Gemma2Config(num_key_value_heads=2, head_dim=16, **common),
        "mistral": MistralConfig(num_key_value_heads=2, **common),
        "phi3": Phi3Config(num_key_value_heads=2, pad_token_id=2, **common),
        "stablelm": StableLmConfig(num_key_value_heads=2, **common),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=64, n_layer=NUM_LAYERS, n_head=4, n_positions=256),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, **SMALL),
        "opt": OPTConfig(vocab_size=vocab, hidden_size=64, ffn_dim=128, word_embed_proj_dim=64, **SMALL),
        "falcon": FalconConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=NUM_LAYERS, num_attention_heads=4),
    }


# The families the issue names for full coverage (extraction, isolation, generation);
# the rest are checked for layer discovery and a steered generation.
CORE_FAMILIES = ["llama", "qwen2", "gemma2", "gpt2", "gpt_neox"]
ALL_FAMILIES = list(family_configs(10))


def build_tiny(family: str, *, dtype: torch.dtype = torch.float64, seed: int = 0) -> LoadedModel:
    tokenizer = make_tokenizer()
    config = family_configs(len(tokenizer))[family]
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    # float64 makes "batched equals alone" exact enough that greedy choices never flip on
    # rounding.
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=f"tiny-{family}")


@contextlib.contextmanager
def slowed_forward(loaded: LoadedModel, seconds: float = 0.3):
    """Every forward pass of `loaded` made `seconds` slower (a real hook that sleeps), for tests
    that act while a generation is still running: a tiny model otherwise finishes its 200
    tokens in a fraction of a second, sooner than the test's next step on an idle machine."""
    handle = loaded.layers[0].register_forward_pre_hook(lambda module, args: time.sleep(seconds))
    try:
        yield
    finally:
        handle.remove()


def build_tiny_llama_for_vllm(*, seed: int = 0, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A tiny random Llama that vLLM can load and split in two: head size 32 (the smallest
    vLLM's CPU attention takes), 4 query and 2 key-value heads (2 and 1 per rank at tensor
    parallel size 2; the embedded SmolLM2's 9 and 3 do not divide), float32 (vLLM takes no
    float64), 2048 positions (the context `VllmScheduler` asks for). Its weights are drawn wider
    than transformers' default (0.02), so that its next-token distributions are peaked (greedy
    choices do not flip on rounding) and its greedy texts vary with the steering instead of
    repeating one token."""
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.1,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, model_id="tiny-llama-vllm")
