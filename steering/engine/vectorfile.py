"""Steering vectors and their safetensors file.

`SteeringVectors` holds, for each preference dimension, one vector per decoder layer
(all layers, so the steered subset can change without recomputing), the layers actually
steered, and the mean residual-stream norm of every layer. A strength s in −1…+1 turns into
an addition at layer l of

    s · range[dim] · residual_norm[l] · v[dim, l] / |v[dim, l]|

so `range` (the functional range) is a fraction of the residual stream's size, a unit that
means the same for every model and extraction method. Several dimensions' additions are
summed; `joint_range` (same unit, optional) caps the sum's size at each layer, since six
full-strength additions together break answers that each alone keeps (issue 24).

The file stores the tensors `vector.<dim>` ([layers, hidden]) and `residual_norms`
([layers]), and everything else as JSON strings in the safetensors metadata.

A set may also carry conditions (conditional steering, `conditions.py`): for a topical
dimension, `condition.direction.<dim>` and `condition.center.<dim>` ([hidden] each), with
their layer and threshold in the metadata's `conditions`. Readers that predate them ignore
both, and steer those dimensions always; they ignore the readout's ends too (readout.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError

from .conditions import Condition, ConditionalSteering
from .vectormeta import metadata_problems
from .readout import ReadoutEnds, ReadoutProbe, ends_from_file, ends_problems, ends_tensors, probe_for
from safetensors.torch import load_file, save_file

FORMAT_VERSION = "1"
METHODS = ("caa", "probe", "pca")
READS = ("mean", "last", "answer")
# Dimension names and labels end up in URLs, pages and the database: short slugs, short labels.
DIMENSION_NAME = re.compile(r"[-a-zA-Z0-9_]{1,50}\Z")  # a Django slug, as PreferenceDimension.name
MAX_LABEL_CHARS = 60


class VectorFileError(ValueError):
    """A vector file that is unreadable, malformed, or does not fit the model."""


class UnknownDimension(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def range_text(positive: float, negative: float | None = None) -> str:
    """A dimension's range as people read it: "±0.015", or "−0.01 / +0.02" when its ends differ
    (`negative` None: they do not)."""
    if negative is None or negative == positive:
        return f"±{positive:.3g}"
    return f"−{negative:.3g} / +{positive:.3g}"


@dataclass
class SteeringVectors:
    model_id: str
    hidden_size: int
    num_layers: int
    layers: list[int]
    vectors: dict[str, torch.Tensor]
    residual_norms: torch.Tensor
    functional_range: dict[str, float]
    method: str = "caa"
    read: str = "mean"
    labels: dict[str, list[str]] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # How well each layer separates the two ends, per dimension (held-out, see layer_score): the
    # evidence behind the steered layers, kept so a later choice of layers can use it.
    layer_scores: dict[str, list[float]] = field(default_factory=dict)
    # The budget of the summed addition, a fraction of the residual norm (range_search.search_joint_range)
    joint_range: float | None = None
    # When each topical dimension applies (see conditions.py); a dimension without one always does.
    conditions: dict[str, Condition] = field(default_factory=dict)
    # How the conditions were chosen: {"layer", "separation": {dim: [per layer]}, "accuracy": {dim}}.
    condition_report: dict = field(default_factory=dict)
    # Whether the prompt's positions are steered too, or only the answer (GenerationRequest.
    # steer_prompt). The ranges are measured under it, so it belongs to the set. Files without
    # it steered the prompt too; sets computed now steer only the answer, which keeps the
    # question as asked (docs/evaluation.md, "Steering the answer only").
    steer_prompt: bool = True
    # Where each dimension is read and its reference ends there (readout.py); {} before it existed.
    readout: dict[str, ReadoutEnds] = field(default_factory=dict)
    # A dimension's range at negative strengths, where it differs from `functional_range` (which
    # is then the positive side's): the two ends of a preference need not bear the same push
    # before answers stop answering (range_search measures each side on its own).
    negative_range: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()
        # Unit directions scaled to the residual stream, computed once: the hot path
        # (building a batch's steering) is then a weighted sum of ready rows.
        self._scaled = {
            dim: vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-12) * self.residual_norms[:, None]
            for dim, vec in self.vectors.items()
        }

    @property
    def dimensions(self) -> list[str]:
        return list(self.vectors)

    @property
    def nbytes(self) -> int:
        """The memory these vectors hold: the vectors, their scaled copies and the norms."""
        tensors = [*self.vectors.values(), *self._scaled.values(), self.residual_norms]
        return sum(t.numel() * t.element_size() for t in tensors)

    def norms(self, dimension: str) -> torch.Tensor:
        return self.vectors[dimension].norm(dim=-1)

    def validate(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.read not in READS:
            problems.append(f"read {self.read!r} is not one of {', '.join(READS)}")
        if not self.vectors:
            problems.append("no dimensions")
        for dim in self.vectors:
            if not (isinstance(dim, str) and DIMENSION_NAME.match(dim)):
                problems.append(
                    f"dimension name {str(dim)[:60]!r} must be 1–50 letters, digits, '-' or '_'"
                )
        for dim, pair in self.labels.items():
            if dim not in self.vectors:
                problems.append(f"labels name unknown dimension {str(dim)[:60]!r}")
            elif not (
                isinstance(pair, list) and len(pair) == 2
                and all(isinstance(label, str) and 0 < len(label) <= MAX_LABEL_CHARS for label in pair)
            ):
                problems.append(
                    f"labels of {dim!r} must be two texts of 1–{MAX_LABEL_CHARS} characters (negative, positive)"
                )
        bad_layers = [layer for layer in self.layers if not 0 <= layer < self.num_layers]
        if bad_layers or not self.layers:
            problems.append(f"steered layers {self.layers} must be a non-empty subset of 0…{self.num_layers - 1}")
        expected = (self.num_layers, self.hidden_size)
        for dim, vec in self.vectors.items():
            if tuple(vec.shape) != expected:
                problems.append(f"vector {dim!r} has shape {tuple(vec.shape)}, expected {expected}")
            elif not torch.isfinite(vec).all():
                problems.append(f"vector {dim!r} has non-finite values")
            if dim not in self.functional_range:
                problems.append(f"dimension {dim!r} has no functional range")
        for dim, scores in self.layer_scores.items():
            if len(scores) != self.num_layers:
                problems.append(f"layer scores of {dim!r} must be {self.num_layers} values, not {len(scores)}")
        for dim, condition in self.conditions.items():
            if dim not in self.vectors:
                problems.append(f"condition names unknown dimension {str(dim)[:60]!r}")
                continue
            if not 0 <= condition.layer < self.num_layers:
                problems.append(f"condition of {dim!r} is at layer {condition.layer}, not one of 0…{self.num_layers - 1}")
            for name, tensor in (("direction", condition.direction), ("center", condition.center)):
                if tuple(tensor.shape) != (self.hidden_size,) or not torch.isfinite(tensor).all():
                    problems.append(f"condition {name} of {dim!r} must be {self.hidden_size} finite values")
            if not math.isfinite(condition.threshold):
                problems.append(f"condition threshold of {dim!r} must be a finite number")
        problems += ends_problems(self.readout, self.vectors, self.num_layers, self.hidden_size)
        if tuple(self.residual_norms.shape) != (self.num_layers,) or not torch.isfinite(self.residual_norms).all():
            problems.append(f"residual_norms must be {self.num_layers} finite values")
        for side, ranges in (("functional range", self.functional_range), ("negative range", self.negative_range)):
            for dim, value in ranges.items():
                if dim not in self.vectors:
                    problems.append(f"{side} names unknown dimension {str(dim)[:60]!r}")
                elif not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                    problems.append(f"{side} of {dim!r} must be a finite number ≥ 0, not {value!r}")
        if self.joint_range is not None and not (
            isinstance(self.joint_range, (int, float)) and math.isfinite(self.joint_range) and self.joint_range > 0
        ):
            problems.append(f"joint range must be a finite number > 0 or absent, not {self.joint_range!r}")
        if not isinstance(self.steer_prompt, bool):
            problems.append(f"steer_prompt must be true or false, not {self.steer_prompt!r}")
        if problems:
            raise VectorFileError("Invalid steering vectors: " + "; ".join(problems))

    def layer_deltas(self, preferences: dict[str, float]) -> dict[int, torch.Tensor]:
        """The addition to each steered layer for one request: Σ_dim s · range · scaled unit vector,
        within the joint budget. Empty when every strength is zero."""
        return self.within_budget(self._summed(preferences), self.term_sizes(preferences))

    def term_sizes(self, preferences: dict[str, float]) -> list[float]:
        """Each steering dimension's own addition, a fraction of the residual norm (the same at
        every layer: |s| · its range)."""
        return [abs(float(s)) * self.range_at(dim, float(s)) for dim, s in preferences.items() if float(s) != 0.0]

    def within_budget(self, deltas: dict[int, torch.Tensor], sizes: Sequence[float] = ()) -> dict[int, torch.Tensor]:
        """`deltas` (a request's whole addition, the sum of terms of `sizes`) scaled down, never
        up, at each layer, direction kept, to the cap `joint_cap(sizes)`. Applied to the final
        sum only: conditional steering sums what applies first, then this."""
        if self.joint_range is None or not deltas:
            return deltas
        cap = self.joint_cap(sizes)
        capped = {}
        for layer, delta in deltas.items():
            size = float(delta.norm()) / max(float(self.residual_norms[layer]), 1e-12)
            capped[layer] = delta * min(1.0, cap / max(size, 1e-12))
        return capped

    def joint_cap(self, sizes: Sequence[float]) -> float:
        """The budget of a sum of terms of `sizes`: `joint_range`, or more where one term leads
        the rest, by as much as it exceeds all the others together. The budget is measured for
        dimensions steering together; one dimension alone keeps its own measured range (which
        may exceed the budget), and a second one joining it at a small strength takes the cap
        down gradually, not at once (measured: docs/evaluation.md, "A budget that leaves one
        dimension alone")."""
        lead = 2 * max(sizes, default=0.0) - sum(sizes)
        return max(self.joint_range, lead) if self.joint_range is not None else math.inf

    def _summed(self, preferences: dict[str, float]) -> dict[int, torch.Tensor]:
        total = None
        for dim, strength in preferences.items():
            if dim not in self.vectors:
                raise UnknownDimension(
                    f"Unknown dimension {dim!r}; this vector set has: {', '.join(self.dimensions)}"
                )
            strength = float(strength)
            if not math.isfinite(strength):
                raise ValueError(f"Strength for {dim!r} must be a finite number, not {strength!r}")
            if strength == 0.0:
                continue
            term = (strength * self.range_at(dim, strength)) * self._scaled[dim]
            total = term if total is None else total + term
        if total is None:
            return {}
        return {layer: total[layer] for layer in self.layers}

    def range_at(self, dimension: str, strength: float) -> float:
        """The range that strength ±1 of `dimension` reaches on the side of `strength`."""
        if strength < 0:
            return self.negative_range.get(dimension, self.functional_range[dimension])
        return self.functional_range[dimension]

    def range_sides(self, dimension: str) -> tuple[float, float]:
        """(towards the negative end, towards the positive end) of a dimension's range."""
        return self.range_at(dimension, -1.0), self.range_at(dimension, 1.0)

    def range_text(self, dimension: str) -> str:
        negative, positive = self.range_sides(dimension)
        return range_text(positive, negative)

    def conditional_deltas(
        self, preferences: dict[str, float], topical: dict[str, float | None]
    ) -> tuple[dict[int, torch.Tensor], ConditionalSteering | None]:
        """One request's steering split in two: (the deltas always added, the topical
        dimensions that apply only when the prompt is about them). `topical` names the
        dimensions that are topical, each with its threshold (None: the calibrated one); a
        topical dimension that has no condition in this set is always added, as before sets
        had conditions."""
        gated = {dim for dim, s in preferences.items() if dim in topical and dim in self.conditions and s != 0}
        if not gated:
            return self.layer_deltas(preferences), None
        # Both parts unbudgeted: the budget caps what is finally added (ConditionalSteering.total).
        always = self._summed({dim: s for dim, s in preferences.items() if dim not in gated})
        dimensions = {
            dim: (self.conditions[dim].with_threshold(topical[dim]), self._summed({dim: preferences[dim]}))
            for dim in sorted(gated)
        }
        sizes = {dim: self.term_sizes({dim: preferences[dim]})[0] for dim in gated}
        kept = self.term_sizes({dim: s for dim, s in preferences.items() if dim not in gated})
        return always, ConditionalSteering(dimensions, budget=self.within_budget, sizes=sizes, always_sizes=kept)

    def check_model(self, *, model_id: str | None, num_layers: int, hidden_size: int) -> None:
        """Raise VectorFileError listing every way these vectors do not fit the model."""
        problems = []
        if model_id is not None and model_id != self.model_id:
            problems.append(f"computed for model {self.model_id!r}, not {model_id!r}")
        if num_layers != self.num_layers:
            problems.append(f"{self.num_layers} layers, the model has {num_layers}")
        if hidden_size != self.hidden_size:
            problems.append(f"hidden size {self.hidden_size}, the model has {hidden_size}")
        if problems:
            raise VectorFileError("These steering vectors do not fit the model: " + "; ".join(problems))

    def with_ranges(self, ranges: dict[str, float], negative: dict[str, float] | None = None) -> SteeringVectors:
        """A copy with these dimensions' ranges replaced (e.g. by measured ones): `ranges` on
        both sides, or on the positive side where `negative` names the negative side's."""
        kept = {dim: value for dim, value in self.negative_range.items() if dim not in ranges}
        differs = {dim: value for dim, value in (negative or {}).items() if value != ranges.get(dim)}
        return SteeringVectors(**{**self._fields(), "functional_range": {**self.functional_range, **ranges},
                                  "negative_range": {**kept, **differs}})

    def with_joint_range(self, joint_range: float | None) -> SteeringVectors:
        """A copy with this budget for the summed addition (None: no cap)."""
        return SteeringVectors(**{**self._fields(), "joint_range": joint_range})

    def with_conditions(self, conditions: dict[str, Condition], report: dict | None = None) -> SteeringVectors:
        """A copy with these conditions (and how they were chosen) in place of its own."""
        return SteeringVectors(**{**self._fields(), "conditions": dict(conditions), "condition_report": report or {}})

    def with_steer_prompt(self, steer_prompt: bool) -> SteeringVectors:
        return SteeringVectors(**{**self._fields(), "steer_prompt": steer_prompt})
    @cached_property
    def readout_probe(self) -> ReadoutProbe | None:
        """What every answer on these vectors reads (readout.py), made on first use and kept:
        a served set is loaded once per process, so its requests only read it."""
        return probe_for(self)

    def with_readout(self, readout: dict[str, ReadoutEnds]) -> SteeringVectors:
        return SteeringVectors(**{**self._fields(), "readout": dict(readout)})

    def with_residual_norms(self, norms: torch.Tensor) -> SteeringVectors:
        """A copy scaled to other residual norms (e.g. measured on the model that serves it)."""
        return SteeringVectors(**{**self._fields(), "residual_norms": norms.float()})

    def _fields(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    # -- file format ------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write atomically: a crash mid-write never leaves a half-written file at `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"vector.{dim}": vec.float().contiguous() for dim, vec in self.vectors.items()}
        tensors["residual_norms"] = self.residual_norms.float().contiguous()
        for dim, condition in self.conditions.items():
            tensors[f"condition.direction.{dim}"] = condition.direction.float().contiguous()
            tensors[f"condition.center.{dim}"] = condition.center.float().contiguous()
        tensors.update(ends_tensors(self.readout))
        meta = {
            "format": FORMAT_VERSION,
            "model_id": self.model_id,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "layers": self.layers,
            "method": self.method,
            "read": self.read,
            "dimensions": self.dimensions,
            "functional_range": self.functional_range,
            "negative_range": self.negative_range,
            "labels": self.labels,
            "norms": {dim: [round(x, 6) for x in self.norms(dim).tolist()] for dim in self.vectors},
            "created_at": self.created_at,
            "layer_scores": self.layer_scores,
            "joint_range": self.joint_range,
            "conditions": {dim: {"layer": c.layer, "threshold": c.threshold} for dim, c in self.conditions.items()},
            "condition_report": self.condition_report,
            "steer_prompt": self.steer_prompt,
            "readout": {dim: {"layer": ends.layer} for dim, ends in self.readout.items()},
        }
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            save_file(tensors, str(tmp), metadata={key: json.dumps(value) for key, value in meta.items()})
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVectors:
        path = Path(path)
        if not path.is_file():
            raise VectorFileError(f"No vector file at {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                raw_meta = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise VectorFileError(f"{path.name} is not a readable safetensors file: {exc}") from exc
        return cls.from_tensors(tensors, raw_meta, source=path.name)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], raw_meta: dict[str, str], *, source: str = "file") -> SteeringVectors:
        try:
            meta = {key: json.loads(value) for key, value in raw_meta.items()}
        except json.JSONDecodeError as exc:
            raise VectorFileError(f"{source}: metadata is not valid JSON ({exc})") from exc
        required = ("model_id", "hidden_size", "num_layers", "layers", "dimensions", "functional_range")
        missing = [key for key in required if key not in meta]
        if missing:
            raise VectorFileError(f"{source}: metadata lacks {', '.join(missing)}")
        problems = metadata_problems(meta)
        if problems:
            raise VectorFileError(f"{source}: malformed metadata: " + "; ".join(problems))
        dims = meta["dimensions"]
        absent = [dim for dim in dims if f"vector.{dim}" not in tensors]
        if absent or "residual_norms" not in tensors:
            raise VectorFileError(f"{source}: missing tensors for {', '.join(absent) or 'residual_norms'}")
        for name, tensor in tensors.items():
            if not tensor.is_floating_point():
                raise VectorFileError(f"{source}: tensor {name} has dtype {tensor.dtype}, expected a float type")
        try:
            return cls(
                model_id=str(meta["model_id"]),
                hidden_size=int(meta["hidden_size"]),
                num_layers=int(meta["num_layers"]),
                layers=[int(layer) for layer in meta["layers"]],
                vectors={dim: tensors[f"vector.{dim}"].float() for dim in dims},
                residual_norms=tensors["residual_norms"].float(),
                functional_range={dim: float(v) for dim, v in meta["functional_range"].items()},
                negative_range={dim: float(v) for dim, v in meta.get("negative_range", {}).items()},
                method=meta.get("method", "caa"),
                read=meta.get("read", "mean"),
                labels=meta.get("labels", {}),
                created_at=meta.get("created_at", ""),
                layer_scores={dim: [float(x) for x in scores] for dim, scores in meta.get("layer_scores", {}).items()},
                joint_range=None if meta.get("joint_range") is None else float(meta["joint_range"]),
                conditions=_conditions(tensors, meta.get("conditions", {}), source),
                condition_report=meta.get("condition_report", {}),
                steer_prompt=meta.get("steer_prompt", True),
                readout=ends_from_file(tensors, meta.get("readout", {})),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, VectorFileError):
                raise
            raise VectorFileError(f"{source}: malformed metadata ({exc})") from exc


def _conditions(tensors: dict[str, torch.Tensor], meta: dict, source: str) -> dict[str, Condition]:
    conditions = {}
    for dim, entry in meta.items():
        direction, center = tensors.get(f"condition.direction.{dim}"), tensors.get(f"condition.center.{dim}")
        if direction is None or center is None:
            raise VectorFileError(f"{source}: the condition of {str(dim)[:60]!r} lacks its direction or centre tensor")
        conditions[dim] = Condition(int(entry["layer"]), direction.float(), center.float(), float(entry["threshold"]))
    return conditions
