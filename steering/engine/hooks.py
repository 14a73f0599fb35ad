"""Per-row steering hooks.

`SteeringHooks` puts one forward hook on each steered decoder layer, once, for the life of
the model. What a hook adds is request data: a `RowSteering` made active only for the
duration of one forward pass by `hooks.active(steering)`. Batch row i gets its own delta
(the sum over dimensions of strength × vector), so requests with different steering share
a forward pass and none can see another's. The active steering lives in a ContextVar, so
it is private to the thread (and asyncio task) running the pass, and it is reset in a
`finally`, so an exception or a cancelled generation never leaves steering behind.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class RowSteering:
    """Additions to the residual stream for one batch: layer → [batch, hidden].
    A layer absent from `deltas` gets nothing; so does a row whose delta is all zeros."""

    deltas: dict[int, torch.Tensor]
    # For one pass only: [batch, columns] weights of each row's delta per position (a prefill
    # that steers only some of its columns); None adds each row's delta at every position.
    columns: torch.Tensor | None = None

    @classmethod
    def from_rows(
        cls, rows: Sequence[dict[int, torch.Tensor]], *, dtype: torch.dtype, device: torch.device
    ) -> RowSteering | None:
        """Stack per-request layer deltas (from `SteeringVectors.layer_deltas`) into batch form.
        None when no row is steered, so an unsteered batch costs nothing in the hooks."""
        layers = sorted({layer for row in rows for layer in row})
        if not layers:
            return None
        hidden = next(iter(next(row for row in rows if row).values())).shape[-1]
        deltas = {}
        for layer in layers:
            stacked = torch.zeros(len(rows), hidden, dtype=torch.float32)
            for i, row in enumerate(rows):
                if layer in row:
                    stacked[i] = row[layer]
            deltas[layer] = stacked.to(device=device, dtype=dtype)
        return cls(deltas)

    def select(self, rows: torch.Tensor | list[int]) -> RowSteering:
        """The same steering for a subset of the batch rows (finished rows dropped)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        columns = None if self.columns is None else self.columns[index.to(self.columns.device)]
        return RowSteering({layer: d[index.to(d.device)] for layer, d in self.deltas.items()}, columns)

    def on_columns(self, columns: torch.Tensor | None) -> RowSteering:
        """This steering weighted per position for one pass (see `columns`)."""
        if columns is None:
            return self
        sample = next(iter(self.deltas.values()))
        return RowSteering(self.deltas, columns.to(device=sample.device, dtype=sample.dtype))


# The steering active in this context, with the hooks it was activated on: a model may carry
# more than one set of hooks (the site's on every layer, and a sweep's or a test's own), and
# each set adds only what was activated on it, so no delta is ever added twice.
# An observer (layer → callback) sees a layer's output, after its delta: how conditional
# steering reads the prompt in the same pass (see conditions.ConditionGate).
_active: ContextVar[tuple[SteeringHooks, RowSteering | None, dict] | None] = ContextVar(
    "steerlab_active_steering", default=None
)


class SteeringHooks:
    """Forward hooks on decoder layers that add the active `RowSteering`.

    `fired[layer]` counts the forward passes in which the hook on that layer added
    something; tests and benchmarks use it to prove steering did (or did not) happen."""

    def __init__(self, layers: nn.ModuleList, steered: Sequence[int] = ()) -> None:
        self._layers = layers
        self._handles: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.fired: Counter[int] = Counter()
        self.attach(steered)

    @property
    def attached(self) -> list[int]:
        return sorted(self._handles)

    def attach(self, steered: Sequence[int]) -> None:
        """Hook more layers; a layer already hooked is left as it is."""
        for index in steered:
            if index in self._handles:
                continue
            if not 0 <= index < len(self._layers):
                raise IndexError(f"Layer {index} does not exist; the model has {len(self._layers)} layers")
            self._handles[index] = self._layers[index].register_forward_hook(self._make_hook(index))

    def remove(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> SteeringHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @contextlib.contextmanager
    def active(self, steering: RowSteering | None, observers: dict | None = None) -> Iterator[None]:
        """Make `steering` (and `observers`: {layer: callback(hidden)}) active for the passes
        run inside this block."""
        missing = set(steering.deltas) - set(self._handles) if steering else set()
        missing |= set(observers or ()) - set(self._handles)
        if missing:
            raise ValueError(f"Steering asks for layers {sorted(missing)} that have no hook")
        engaged = steering is not None or bool(observers)
        token = _active.set((self, steering, observers or {}) if engaged else None)
        try:
            yield
        finally:
            _active.reset(token)

    def _make_hook(self, index: int):
        def hook(module: nn.Module, args, output):
            active = _active.get()
            if active is None or active[0] is not self:
                return None
            _, steering, observers = active
            delta = steering.deltas.get(index) if steering is not None else None
            observer = observers.get(index)
            if delta is None and observer is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            if delta is None:
                observer(hidden)
                return None
            if delta.shape[0] != hidden.shape[0]:
                raise RuntimeError(
                    f"Steering has {delta.shape[0]} rows but the batch at layer {index} has {hidden.shape[0]}"
                )
            self.fired[index] += 1
            if steering.columns is None:
                steered = hidden + delta[:, None, :]
            else:
                steered = hidden + delta[:, None, :] * steering.columns[..., None]
            if observer is not None:
                observer(steered)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook


def current_steering() -> RowSteering | None:
    """The steering active in this context (None outside a steered forward pass)."""
    active = _active.get()
    return active[1] if active is not None else None
