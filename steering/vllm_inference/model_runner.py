"""Attaching the steering table to vLLM's V1 model runner (vLLM 0.32.0; GPU and CPU runners).

Three touch points, all on the runner instance that owns the model:

1. `load_model` (patched on the runner classes, in this process, while an engine is being
   built): after the weights load, a forward hook on each decoder layer adds the layer's
   table rows through the `steerlab::add_rows` op. vLLM's Llama-like layers return
   `(hidden_states, residual)` and add the two at the start of the next layer (or in the
   final norm), so adding to `hidden_states` adds to the output of decoder layer l, the
   builtin engine's hook point. Done at load time, before vLLM compiles or warms up, so a
   compiled model traces the op too.
2. `_model_forward`: before each pass the token → row index is filled from the batch
   (`input_batch.req_ids` in order, `query_start_loc` for each request's tokens,
   `input_batch.num_computed_tokens_cpu` for the position of each one's first token: vLLM's
   `_prepare_inputs` computes the pass's positions from the same numbers; only asynchronous
   speculative decoding, which SteerLab does not enable, corrects them afterwards on the GPU).
3. `_update_states`: requests new to the runner are bound to the row their
   `SamplingParams.extra_args["steerlab_row"]` names, from the position
   `extra_args["steerlab_steered_from"]` names (answer-only steering; absent: all of it);
   finished ones are unbound.

Needs the V1 runner in this process: `VLLM_ENABLE_V1_MULTIPROCESSING=0` and
`VLLM_USE_V2_MODEL_RUNNER=0`, set by `steering.vllm_inference.engine` before it builds one.
"""

from __future__ import annotations

import threading

import torch

from steering.engine.loading import LAYER_PATHS, UnsupportedModel, find_layers

from .steering_table import SteeringTable

ROW_ARG = "steerlab_row"
STEERED_FROM_ARG = "steerlab_steered_from"

# vLLM's model classes name their decoder layers as transformers' do, plus one wrapper layout.
VLLM_LAYER_PATHS = (*LAYER_PATHS, "language_model.model.layers")


class SteeringUnsupported(RuntimeError):
    """The steering hook cannot attach to this model's decoder layers."""


class Installation:
    """What `install` left on one runner: the table, and how many passes it touched."""

    def __init__(self, table: SteeringTable, layers, *, always_add: bool) -> None:
        self.table = table
        self.layers = layers
        self.always_add = always_add
        self.passes = 0
        self.steered_passes = 0
        self.active = False  # the coming pass has a steered token (eager mode skips the op otherwise)


_pending = threading.local()


def find_decoder_layers(model: torch.nn.Module):
    try:
        return find_layers(model, VLLM_LAYER_PATHS)
    except UnsupportedModel as exc:
        raise SteeringUnsupported(
            f"SteerLab's vLLM steering hook cannot find the decoder layers of {type(model).__name__} "
            f"(looked for {', '.join(VLLM_LAYER_PATHS)}); this model family cannot be steered on vLLM. "
            "Serve it with STEERLAB_ENGINE=builtin."
        ) from exc


def _layer_hook(install: Installation, index: int):
    table = install.table

    def hook(module, args, output):
        if not (install.always_add or install.active):
            return None
        if isinstance(output, tuple):
            return (table.add(index, output[0]), *output[1:])
        return table.add(index, output)

    return hook


def install(runner, *, rows: int, eager: bool) -> Installation:
    """Put the steering hook on `runner` (a loaded V1 GPUModelRunner or CPUModelRunner)."""
    model = runner.get_model()
    layers = find_decoder_layers(model)
    hidden_size = runner.model_config.get_hidden_size()
    dtype = runner.model_config.dtype
    table = SteeringTable(num_layers=len(layers), hidden_size=hidden_size, rows=rows,
                          max_tokens=runner.max_num_tokens, dtype=dtype, device=runner.device)
    installation = Installation(table, layers, always_add=not eager)
    for index, layer in enumerate(layers):
        layer.register_forward_hook(_layer_hook(installation, index))

    original_forward = runner._model_forward
    original_update = runner._update_states

    def _model_forward(*args, **kwargs):
        batch = runner.input_batch
        req_ids = list(batch.req_ids)
        computed = batch.num_computed_tokens_cpu[: len(req_ids)]
        installation.active = table.fill_index(req_ids, runner.query_start_loc.np[: len(req_ids) + 1], computed)
        installation.passes += 1
        installation.steered_passes += installation.active
        return original_forward(*args, **kwargs)

    def _update_states(scheduler_output):
        for request_id in scheduler_output.finished_req_ids:
            table.unbind(request_id)
        for new in scheduler_output.scheduled_new_reqs:
            params = new.sampling_params
            extra = (params.extra_args or {}) if params is not None else {}
            row = int(extra.get(ROW_ARG, 0))
            if row:
                table.bind(new.req_id, row, steered_from=int(extra.get(STEERED_FROM_ARG, 0)))
        return original_update(scheduler_output)

    runner._model_forward = _model_forward
    runner._update_states = _update_states
    runner.steerlab_steering = installation
    return installation


def patch_runner_classes() -> None:
    """Make the V1 runners install the hook right after loading their model, when an engine
    is being built by `building(...)` in this thread. Idempotent."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    classes = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        classes.append(CPUModelRunner)
    except ImportError:  # a CUDA build without the CPU runner
        pass
    for cls in classes:
        if "load_model" not in cls.__dict__ or getattr(cls.__dict__["load_model"], "_steerlab", False):
            continue
        original = cls.__dict__["load_model"]

        def load_model(self, *args, _original=original, **kwargs):
            result = _original(self, *args, **kwargs)
            spec = getattr(_pending, "spec", None)
            if spec is not None and not hasattr(self, "steerlab_steering"):
                spec["installation"] = install(self, rows=spec["rows"], eager=spec["eager"])
            return result

        load_model._steerlab = True
        cls.load_model = load_model


class building:
    """`with building(rows=…, eager=…) as spec:` build an in-process engine; afterwards
    `spec["installation"]` is the runner's `Installation`."""

    def __init__(self, *, rows: int, eager: bool) -> None:
        self.spec = {"rows": rows, "eager": eager, "installation": None}

    def __enter__(self) -> dict:
        patch_runner_classes()
        _pending.spec = self.spec
        return self.spec

    def __exit__(self, *exc) -> None:
        _pending.spec = None
