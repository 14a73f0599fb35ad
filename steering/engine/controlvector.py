"""GGUF control vectors: llama.cpp's steering file, also read and written by repeng and
EasySteer. One file holds one direction per decoder block.

The rules are those of llama.cpp's loader (`common_control_vector_load_one`), which reads
nothing but the tensors:
- every tensor is named `direction.N` with N ≥ 1 (the text after the first dot is read as
  C's `stoi` would: leading blanks, a sign, digits, anything after them ignored); any other
  name, or N = 0, rejects the whole file;
- each is float32, 1-D (ggml's count, so trailing sizes of 1 do not count as dimensions),
  and all have one length, the model's n_embd;
- `direction.N` × the file's scale is added to the output of block N (0-based: Hugging Face
  `hidden_states[N+1]`, the output of `model.layers[N]`) at every token, which is exactly
  where SteerLab's hook on layer N adds its steering. Block 0's output can never be steered.
  A repeated N accumulates.
Metadata is for tools: `general.architecture = "controlvector"`, `controlvector.model_hint`
(repeng refuses a file without it) and `controlvector.layer_count`; SteerLab's own keys
(`steerlab.*`) record the unit and the source, and other readers ignore them.

`control_vector_from(vectors, dimension, strength)` gives the file that adds what SteerLab
adds at that strength (`--control-vector-scaled file.gguf:1.0`); `steering_vectors_from(...)`
turns a file back into a one-dimension `SteeringVectors` in SteerLab's unit.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .ggufread import F32, GgufError, GgufLimits, Isolation, parse_isolated, parse_with_data
from .vectorfile import METHODS, SteeringVectors

ARCHITECTURE = "controlvector"
FORMAT = "steerlab-controlvector-1"
UNIT = "residual stream: strength x functional range x mean residual norm of the block, per block"
# std::stoi's grammar: what llama.cpp makes of the text after "direction.".
_STOI = re.compile(r"[ \t\n\v\f\r]*([+-]?\d+)")
_INT32_MAX = 2**31 - 1


class ControlVectorError(ValueError):
    """A file that llama.cpp's loader would reject, or that does not fit a model."""


@dataclass
class ControlVector:
    """`directions`: block index N ≥ 1 → float32 [n_embd]; `metadata`: every key-value pair
    besides the GGUF header's own (strings, numbers, lists)."""

    directions: dict[int, torch.Tensor]
    model_hint: str = ""
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def n_embd(self) -> int:
        return next(iter(self.directions.values())).shape[0]

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)


def block_index(name: str) -> int:
    """N of a tensor named `direction.N` as llama.cpp reads it; -1 when it would reject it."""
    prefix, dot, rest = name.partition(".")
    if not dot or prefix != "direction":
        return -1
    match = _STOI.match(rest)
    if match is None or abs(int(match.group(1))) > _INT32_MAX:
        return -1
    return int(match.group(1))


# -- writing -----------------------------------------------------------------------------------


def write_control_vector(control: ControlVector, path: str | Path) -> Path:
    """Write `control` as a GGUF file llama.cpp loads; atomically (a temporary file, then a
    rename), so a failure never leaves half a file at `path`."""
    import gguf

    check_directions(control.directions)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", control.model_hint)
        # int32, as llama.cpp's cvector-generator writes it (repeng writes uint32; neither
        # loader reads it).
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(control.directions))
        for key, value in control.metadata.items():
            _add_value(writer, key, value)
        for layer in control.layers:
            writer.add_tensor(f"direction.{layer}", control.directions[layer].detach().float().cpu().contiguous().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _add_value(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, int):
        writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float64(key, value)  # float64: a strength read back is the one written
    elif isinstance(value, (list, tuple)):
        writer.add_array(key, list(value))
    else:
        raise TypeError(f"Metadata {key!r}: {type(value).__name__} is not a GGUF value")


def check_directions(directions: dict[int, torch.Tensor]) -> None:
    if not directions:
        raise ControlVectorError("A control vector needs at least one direction")
    lengths = {tuple(t.shape) for t in directions.values()}
    if any(layer < 1 or layer > _INT32_MAX for layer in directions):
        raise ControlVectorError("Direction indices must be ≥ 1: llama.cpp cannot steer block 0's output")
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ControlVectorError(f"Directions must be 1-D and of one length, not {sorted(lengths)}")
    if not all(torch.isfinite(t).all() for t in directions.values()):
        raise ControlVectorError("Directions must be finite")


# A set may apply a topical dimension only to turns about its subject (conditional steering);
# a control vector cannot say when, so the export carries the vector alone, and says so.
CONDITION_NOTICE = (
    "SteerLab applies {dimension} only to turns about its subject (conditional steering); llama.cpp has "
    "no conditions, so this control vector carries the steering vector only and steers every turn."
)

# A set may steer only the answer (SteeringVectors.steer_prompt); llama.cpp adds a control
# vector at every position, prompt included, where this range was not measured.
ANSWER_ONLY_NOTICE = (
    "SteerLab steers only the answer with this set; llama.cpp also steers the prompt, which moves the "
    "text further at the same scale: start below 1."
)
# A set whose two ends bear different pushes (SteeringVectors.negative_range) exports one side.
SIDED_NOTICE = (
    "{dimension} reaches {negative:.4g} towards its negative end and {positive:.4g} towards its positive end "
    "(× residual norm); llama.cpp scales one vector both ways, so this file, exported at strength {strength:g}, "
    "holds the {side} side: export the other side at a strength of the other sign for it."
)


def control_vector_from(
    vectors: SteeringVectors, dimension: str, strength: float = 1.0, *, model_hint: str = "", source: str = ""
) -> ControlVector:
    """The control vector that adds, at scale 1, what `vectors` add for `dimension` at
    `strength`: per steered block N ≥ 1, strength × range × residual_norm[N] × unit vector.
    A steered layer 0 cannot be carried (llama.cpp has no slot for it) and is listed in
    `steerlab.omitted_layers`."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength != 0):
        raise ControlVectorError(f"The strength must be a non-zero finite number, not {strength!r}")
    deltas = vectors.layer_deltas({dimension: strength})
    if not deltas:
        raise ControlVectorError(f"Dimension {dimension!r} has a functional range of 0: it steers nothing")
    directions = {layer: delta.float().clone() for layer, delta in deltas.items() if layer >= 1}
    if not directions:
        raise ControlVectorError("The set steers layer 0 only, which llama.cpp cannot steer")
    labels = vectors.labels.get(dimension) or [f"less {dimension}", f"more {dimension}"]
    metadata = {
        "steerlab.format": FORMAT,
        "steerlab.unit": UNIT,
        "steerlab.model_id": vectors.model_id,
        "steerlab.source": source,
        "steerlab.dimension": dimension,
        "steerlab.labels": list(labels[:2]),
        "steerlab.method": vectors.method,
        "steerlab.strength": float(strength),
        "steerlab.functional_range": float(vectors.range_at(dimension, strength)),
        "steerlab.omitted_layers": [layer for layer in deltas if layer < 1],
    }
    if not metadata["steerlab.omitted_layers"]:
        del metadata["steerlab.omitted_layers"]
    notices = []
    if dimension in vectors.conditions:
        notices.append(CONDITION_NOTICE.format(dimension=dimension))
    if not vectors.steer_prompt:
        notices.append(ANSWER_ONLY_NOTICE)
    negative, positive = vectors.range_sides(dimension)
    if positive != negative:
        notices.append(SIDED_NOTICE.format(dimension=dimension, negative=negative, positive=positive, strength=strength,
                                           side="negative" if strength < 0 else "positive"))
    if notices:
        metadata["steerlab.notice"] = " ".join(notices)
    return ControlVector(directions=directions, model_hint=model_hint, metadata=metadata)


# -- reading -----------------------------------------------------------------------------------


def read_control_vector(
    path: str | Path, *, limits: GgufLimits | None = None, isolation: Isolation | None = None
) -> ControlVector:
    """Read a GGUF control vector, refusing it exactly when llama.cpp's loader would (and
    also when it is not readable GGUF at all, or holds non-finite numbers). Raises
    ControlVectorError with the loader's reason.

    The file may come from anyone: it is read by ggufread's strict reader within `limits`
    (GgufLimits' defaults when None), in a child process under `isolation`'s time and memory
    caps when given (untrusted uploads), else in this process."""
    limits = limits or GgufLimits()
    try:
        if isolation is not None:
            parsed, chunks = parse_isolated(path, limits, isolation)
        else:
            parsed, chunks = parse_with_data(path, limits)
    except GgufError as exc:
        raise ControlVectorError(f"Not a readable GGUF file: {exc}") from exc
    except OSError as exc:
        raise ControlVectorError(f"Not a readable GGUF file: {exc.__class__.__name__}: {exc}") from exc
    directions: dict[int, torch.Tensor] = {}
    n_embd = None
    names = set()
    for tensor, chunk in zip(parsed.tensors, chunks):
        if tensor.name in names:  # gguf's own loader refuses a repeated name
            raise ControlVectorError(f"Not a readable GGUF file: tensor {tensor.name!r} appears twice")
        names.add(tensor.name)
        layer = block_index(tensor.name)
        if layer < 0:
            raise ControlVectorError(f"Invalid/unparsable direction tensor layer index: tensor {tensor.name!r}")
        if layer == 0:
            raise ControlVectorError(f"Invalid (zero) direction tensor layer index: tensor {tensor.name!r}")
        if tensor.ggml_type != F32:
            raise ControlVectorError(f"Invalid (non-F32) direction tensor type: {tensor.name} is {tensor.type_name}")
        shape = list(tensor.shape)
        while len(shape) > 1 and shape[-1] == 1:  # ggml_n_dims ignores trailing sizes of 1
            shape.pop()
        if len(shape) != 1:
            raise ControlVectorError(f"Invalid (non-1D) direction tensor shape: {tensor.name} has shape {shape}")
        if n_embd is None:
            n_embd = shape[0]
        elif shape[0] != n_embd:
            raise ControlVectorError(f"Direction tensor {tensor.name} has {shape[0]} values, the previous ones {n_embd}")
        data = torch.from_numpy(np.frombuffer(chunk, dtype="<f4").astype(np.float32))
        if not torch.isfinite(data).all():
            raise ControlVectorError(f"Direction tensor {tensor.name} holds non-finite values")
        directions[layer] = directions[layer] + data if layer in directions else data  # repeats add up
    if not directions:
        raise ControlVectorError("No direction tensors found")
    metadata = dict(parsed.metadata)
    model_hint = metadata.pop(f"{ARCHITECTURE}.model_hint", "")
    return ControlVector(directions=directions, model_hint=str(model_hint), metadata=metadata)


def recorded_number(metadata: dict, key: str) -> float:
    """A number a SteerLab file must record (its strength, its range): finite and non-zero,
    else ControlVectorError naming the key."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value == 0:
        shown = "missing" if value is None else repr(value)[:60]
        raise ControlVectorError(f"{key} must be a non-zero finite number in a {FORMAT} file, not {shown}")
    return float(value)


def steering_vectors_from(
    control: ControlVector,
    *,
    dimension: str,
    labels: list[str],
    model_id: str,
    num_layers: int,
    hidden_size: int,
    residual_norms: torch.Tensor,
) -> SteeringVectors:
    """A one-dimension `SteeringVectors` that adds the file's directions, in SteerLab's unit.

    A file SteerLab wrote records its strength s and range R, so each block's residual norm
    comes back exactly (|direction| / (s·R)) and the set steers as the source set did. For
    any other file the shape across blocks is the file's own, scaled by one factor c (the
    median of |direction| / the model's `residual_norms`): strength 1 × range c is then the
    file at scale 1. Raises ControlVectorError when the file does not fit the model."""
    problems = []
    if control.n_embd != hidden_size:
        problems.append(f"directions have {control.n_embd} values, the model's hidden size is {hidden_size}")
    beyond = [layer for layer in control.layers if layer >= num_layers]
    if beyond:
        problems.append(f"blocks {beyond} do not exist: the model has {num_layers} (0…{num_layers - 1})")
    if problems:
        raise ControlVectorError("This control vector does not fit the model: " + "; ".join(problems))
    norms = {layer: float(control.directions[layer].norm()) for layer in control.layers}
    steered = [layer for layer in control.layers if norms[layer] > 0]
    if not steered:
        raise ControlVectorError("Every direction is zero: the file steers nothing")
    meta = control.metadata
    ours = meta.get("steerlab.format") == FORMAT
    if ours:
        strength, recorded_range = recorded_number(meta, "steerlab.strength"), recorded_number(meta, "steerlab.functional_range")
        scale = strength * recorded_range
        functional_range, method = abs(recorded_range), str(meta.get("steerlab.method", "caa"))
        if scale < 0:  # exported at a negative strength: the file points at the negative end
            scale, sign = -scale, -1.0
        else:
            sign = 1.0
    else:
        scale = statistics.median(norms[layer] / max(float(residual_norms[layer]), 1e-12) for layer in steered)
        functional_range, method, sign = scale, "pca", 1.0  # repeng and cvector-generator use PCA
    vectors = torch.zeros(num_layers, hidden_size)
    block_norms = residual_norms.detach().float().clone()
    for layer in steered:
        vectors[layer] = sign * control.directions[layer]
        block_norms[layer] = norms[layer] / scale
    return SteeringVectors(
        model_id=model_id,
        hidden_size=hidden_size,
        num_layers=num_layers,
        layers=steered,
        vectors={dimension: vectors},
        residual_norms=block_norms,
        functional_range={dimension: functional_range},
        method=method if method in METHODS else "pca",
        labels={dimension: list(labels)},
    )
