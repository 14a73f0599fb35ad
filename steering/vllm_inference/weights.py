"""The site model's weights in a form vLLM loads: a local model directory as it is, the
embedded GGUF (or any GGUF file) saved once as plain safetensors beside its config and
tokenizer."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CONVERTED_MARK = "steerlab-converted.json"


def vllm_model_dir(loaded, name: str, cache_dir: Path) -> Path:
    """A directory vLLM can load for the site model `name`: a local model directory as it is;
    otherwise (the embedded GGUF, any GGUF file) the builtin engine's own weights saved once
    as safetensors under `cache_dir`, so both engines compute with the same numbers.

    One directory per dtype: a float32 server reusing weights a bfloat16 one saved would
    compute with rounded weights while its builtin model does not (the vLLM pass failed so on
    a checkout where a bf16 benchmark had run first)."""
    from steering.engine.loading import EMBEDDED

    path = Path(name).expanduser()
    if name != EMBEDDED and path.is_dir():
        return path
    if name != EMBEDDED and not path.is_file():
        return Path(name)  # a hub name: vLLM fetches it itself
    source = str(path) if name != EMBEDDED else "embedded"
    dtype = str(loaded.dtype).removeprefix("torch.")
    target = Path(cache_dir) / (
        loaded.model_id.replace("/", "--") + ("" if name == EMBEDDED else "-" + path.stem) + "-" + dtype
    )
    mark = target / CONVERTED_MARK
    if mark.is_file() and json.loads(mark.read_text()) == {"source": source, "model_id": loaded.model_id, "dtype": dtype}:
        return target
    log.info("Converting %s to safetensors for vLLM in %s", source, target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _save_plain(loaded, partial)
    (partial / CONVERTED_MARK).write_text(json.dumps({"source": source, "model_id": loaded.model_id, "dtype": dtype}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # whole or not at all: a half-written directory is never loaded
    return target


def _save_plain(loaded, directory: Path) -> None:
    """The loaded model's weights (de-quantized from the GGUF) as plain safetensors, with its
    config and tokenizer. Not `save_pretrained`: transformers 5 marks a model read from a
    GGUF as quantized and refuses to save it, and the config would tell vLLM so too."""
    import copy

    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    model = loaded.model
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the embedding's own tensor; safetensors refuses shared memory
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
