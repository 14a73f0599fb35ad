"""Attaching the steering table to vLLM's V1 model runner (vLLM 0.32.0; GPU and CPU runners).

The hook lives wherever vLLM runs the model: in this process (one device, in-process engine),
or in worker processes (tensor or pipeline parallelism: one per rank, each with its own
model shard and its own table). So nothing here is shared with the engine's side but what
vLLM itself ships to every rank with each request:

- **The worker class.** `SteeringWorkerMixin` is mixed into the platform's worker
  (`worker_class_name()`, passed as vLLM's `worker_cls`, so every rank's process builds it):
  its `load_model` installs the hook right after the weights load, before vLLM compiles or
  warms the model up, with the number of rows from `additional_config["steerlab"]`.
- **The request.** A steered request's `SamplingParams.extra_args` carry its row
  (`steerlab_row`), its deltas (`steerlab_deltas`, `pack_deltas`) and, for answer-only
  steering, its first steered position (`steerlab_steered_from`). vLLM hands every rank the
  same scheduler output, so each rank's `_update_states` writes the same row of its own table.

On the runner, three touch points:

1. After `load_model`: a forward hook on each decoder layer adds the layer's table rows through
   the `steerlab::add_rows` op. vLLM's Llama-like layers return `(hidden_states, residual)`
   and add the two at the start of the next layer (or in the final norm), so adding to
   `hidden_states` adds to the output of decoder layer l, the builtin engine's hook point.
   With tensor parallelism the layer's output is whole on every rank (its row-parallel
   projections all-reduce before returning), so each rank adds the whole delta. With pipeline
   parallelism a rank's hooks fire only on the layers it holds.
2. `_model_forward`: before each pass the token → row index is filled from the batch
   (`input_batch.req_ids` in order, `query_start_loc` for each request's tokens,
   `input_batch.num_computed_tokens_cpu` for the position of each one's first token: vLLM's
   `_prepare_inputs` computes the pass's positions from the same numbers; only asynchronous
   speculative decoding, which SteerLab does not enable, corrects them afterwards on the GPU).
3. `_update_states`: requests new to the runner are bound to their row with their deltas;
   finished ones are unbound (their row zeroed).

Needs the V1 runner: `VLLM_USE_V2_MODEL_RUNNER=0`, set by `steering.vllm_inference.engine`
before it builds an engine (worker processes inherit it).
"""

from __future__ import annotations

import torch

from steering.engine.loading import LAYER_PATHS, UnsupportedModel, find_layers

from .steering_table import SteeringTable, unpack_deltas

ROW_ARG = "steerlab_row"
DELTAS_ARG = "steerlab_deltas"
STEERED_FROM_ARG = "steerlab_steered_from"
CONFIG_KEY = "steerlab"  # vLLM's additional_config: {"steerlab": {"rows": …}}

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
                table.bind(new.req_id, row, unpack_deltas(extra[DELTAS_ARG]),
                           steered_from=int(extra.get(STEERED_FROM_ARG, 0)))
        return original_update(scheduler_output)

    runner._model_forward = _model_forward
    runner._update_states = _update_states
    runner.steerlab_steering = installation
    return installation


class SteeringWorkerMixin:
    """Mixed into vLLM's worker class (see `worker_class_name`): every rank's worker installs
    the hook on its own runner as soon as its model is loaded, and answers `steerlab_state`
    (through `collective_rpc`) with what its hook has done."""

    def load_model(self, *args, **kwargs):
        result = super().load_model(*args, **kwargs)
        settings = (self.vllm_config.additional_config or {}).get(CONFIG_KEY)
        if settings is None:
            raise RuntimeError(f"SteerLab's vLLM worker needs additional_config[{CONFIG_KEY!r}] (its number of rows)")
        install(self.model_runner, rows=int(settings["rows"]), eager=self.model_config.enforce_eager)
        return result

    def steerlab_state(self) -> dict:
        """This rank's hook: passes run, passes with a steered token, requests bound, and the
        rows holding a non-zero vector."""
        installation: Installation = self.model_runner.steerlab_steering
        table = installation.table
        nonzero = (table.tables != 0).any(dim=2).any(dim=0)  # per row, over layers and the hidden size
        return {
            "rank": self.rank,
            "passes": installation.passes,
            "steered_passes": installation.steered_passes,
            "bound": table.bound,
            "nonzero_rows": [int(row) for row in nonzero.nonzero().flatten()],
        }


def worker_class_name() -> str:
    """vLLM's `worker_cls` for this platform, with the steering hook mixed in. Named, not
    passed as a class: each rank's process imports it (vLLM refuses class objects there)."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return "steering.vllm_inference.workers.cpu.SteeringCPUWorker"
    if current_platform.is_cuda_alike():
        return "steering.vllm_inference.workers.gpu.SteeringGPUWorker"
    raise SteeringUnsupported(
        f"SteerLab's vLLM steering hook supports vLLM's CPU and CUDA/ROCm workers, not {current_platform.device_name}"
    )
