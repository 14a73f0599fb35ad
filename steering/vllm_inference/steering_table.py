"""Per-request steering inside one vLLM forward pass: a table of vectors per layer and one
token → row index, added at the output of decoder layers by a custom op.

vLLM flattens a batch into one sequence of tokens (all requests' prompt chunks and decode
tokens side by side, `query_start_loc` saying where each request's tokens start), so steering
cannot be "row i of the batch" as in the builtin engine. Instead:

- each steered layer l has a table [rows, hidden]: row 0 is zeros (unsteered requests and
  padding tokens point there), row r > 0 holds one live request's delta for layer l;
- one index [max tokens] says which row each token of the current pass reads; it is shared by
  all layers and filled before each forward pass from the runner's batch; a request that steers
  only its answer (`GenerationRequest.steer_prompt` False) has its tokens before its first
  steered position read row 0, by position, so a prompt split over several passes (chunked
  prefill, a prefix served from the cache) is read as one;
- `steerlab::add_rows(hidden, table, index)` adds `table[index[:n]]` to the layer's output.

It is a `torch.library.custom_op`, so torch.compile (and CUDA graphs) treat it as one opaque
call on static buffers: the table and the index are written in place between passes, never
re-traced.

Two sides, which may live in different processes (vLLM's workers; with tensor parallelism one
per rank, each holding its own table):

- `SteeringRows`, the engine's side: which row numbers are taken. A request takes one when it is
  admitted and gives it back when it leaves; when none is free, the caller keeps the request
  waiting (it must never run unsteered).
- `SteeringTable`, the model runner's side: a request's deltas travel with it (`pack_deltas`,
  in its SamplingParams) and are written to its row when the runner first sees it.

Django-free and vLLM-free: the attachment to vLLM's runner is in `steering.vllm_inference.model_runner`.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Mapping

import torch


@torch.library.custom_op("steerlab::add_rows", mutates_args=())
def add_rows(hidden: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`hidden` [tokens, hidden] plus, for token t, row `index[t]` of `table`."""
    return hidden + table[index[: hidden.shape[0]]].to(hidden.dtype)


@add_rows.register_fake
def _(hidden: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(hidden)


class TableFull(Exception):
    """Every steering row is taken; the request must wait for one to free."""


def pack_deltas(deltas: Mapping[int, torch.Tensor]) -> list[list]:
    """`deltas` (layer → [hidden]) as `[[layer, float32 bytes], …]`: plain ints and bytes, which
    every hop between vLLM's processes carries (msgpack to an engine core process, pickle to
    its workers) and SamplingParams' extra_args accepts. float32 holds a bf16 or float16 delta
    exactly; the table casts to the model's dtype."""
    return [
        [int(layer), delta.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()]
        for layer, delta in sorted(deltas.items())
    ]


def unpack_deltas(packed) -> dict[int, torch.Tensor]:
    return {int(layer): torch.frombuffer(bytearray(data), dtype=torch.float32) for layer, data in packed}


class SteeringRows:
    """The engine's side of the table: which of `rows` steering rows (1…rows; row 0 is the
    zeros) are taken. `allocate` checks the deltas against the model's shape first, so a bad
    request is refused before it takes a row. Thread-safe."""

    def __init__(self, *, num_layers: int, hidden_size: int, rows: int) -> None:
        if rows < 1:
            raise ValueError("The steering table needs at least one row")
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.rows = rows
        self._free = list(range(rows, 0, -1))  # pop() hands out row 1 first
        self._lock = threading.Lock()

    def allocate(self, deltas: Mapping[int, torch.Tensor]) -> int:
        """A row for `deltas` (layer → [hidden]); raises TableFull when none is free."""
        for layer, delta in deltas.items():
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"Steering names layer {layer}; the model has {self.num_layers} layers")
            if tuple(delta.shape) != (self.hidden_size,):
                raise ValueError(f"Steering for layer {layer} has shape {tuple(delta.shape)}; needs ({self.hidden_size},)")
        with self._lock:
            if not self._free:
                raise TableFull(f"All {self.rows} steering rows are in use")
            return self._free.pop()

    def free(self, row: int) -> None:
        """Give a row back (a no-op for row 0 and for a row already free)."""
        if row == 0:
            return
        with self._lock:
            if row not in self._free:
                self._free.append(row)

    @property
    def free_rows(self) -> int:
        with self._lock:
            return len(self._free)


class SteeringTable:
    """The model runner's side: the vectors of the live steered requests, per layer, and the
    token → row index.

    `rows` is the number of requests that can be steered at once (row 0, the zeros, comes on
    top). `bind` / `unbind` are called as the runner's requests come and go, `fill_index`
    before each forward pass, `add` by each decoder layer's hook."""

    def __init__(
        self, *, num_layers: int, hidden_size: int, rows: int, max_tokens: int, dtype: torch.dtype, device
    ) -> None:
        if rows < 1:
            raise ValueError("The steering table needs at least one row")
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.rows = rows
        self.device = torch.device(device)
        self.dtype = dtype
        # All layers get a table: which ones a vector set steers is known only per request,
        # and a zero row costs one gather-add per layer, nothing next to the layer itself.
        self.tables = torch.zeros(num_layers, rows + 1, hidden_size, dtype=dtype, device=self.device)
        self.index = torch.zeros(max_tokens, dtype=torch.long, device=self.device)
        self._by_request: dict[str, int] = {}  # vLLM request id → row
        self._steered_from: dict[str, int] = {}  # vLLM request id → its first steered position
        self._lock = threading.Lock()

    # -- requests --------------------------------------------------------------------------

    def bind(self, request_id: str, row: int, deltas: Mapping[int, torch.Tensor], *, steered_from: int = 0) -> None:
        """Request `request_id` reads row `row`, which now holds `deltas` (layer → [hidden]),
        from its position `steered_from` on (0: all; an answer-only request: its last prompt
        position). The engine hands a row to one live request at a time."""
        if not 1 <= row <= self.rows:
            raise ValueError(f"Steering row {row} is outside the table (1…{self.rows})")
        for layer, delta in deltas.items():
            if not 0 <= layer < self.num_layers or tuple(delta.shape) != (self.hidden_size,):
                raise ValueError(f"Steering for layer {layer} of shape {tuple(delta.shape)} does not fit the model")
        with self._lock:
            self.tables[:, row].zero_()
            for layer, delta in deltas.items():
                self.tables[layer, row] = delta.to(device=self.device, dtype=self.dtype)
            self._by_request[request_id] = row
            if steered_from:
                self._steered_from[request_id] = steered_from

    def unbind(self, request_id: str) -> None:
        """The request has left: its row is zeroed (unless another request reads it already),
        so that a stale index entry could only ever add nothing."""
        with self._lock:
            row = self._by_request.pop(request_id, 0)
            self._steered_from.pop(request_id, None)
            if row and row not in self._by_request.values():
                self.tables[:, row].zero_()

    def row_of(self, request_id: str) -> int:
        return self._by_request.get(request_id, 0)

    @property
    def bound(self) -> int:
        """Steered requests the runner holds; 0 lets an eager pass skip the op."""
        return len(self._by_request)

    # -- the index -------------------------------------------------------------------------

    def fill_index(self, request_ids, query_start_loc, computed=None) -> bool:
        """Point each token of the coming pass at its request's row: request i's tokens are
        query_start_loc[i] … query_start_loc[i+1]-1, at positions computed[i] on (the tokens
        it has in the cache already; None: all 0). Tokens before their request's first steered
        position, and tokens past the last request (padding), read row 0. Says whether any
        token of the pass reads a steered row."""
        starts = [int(x) for x in query_start_loc[: len(request_ids) + 1]]
        total = starts[-1] if starts else 0
        if total > self.index.shape[0]:
            raise RuntimeError(f"A pass of {total} tokens exceeds the steering index ({self.index.shape[0]})")
        rows = [self.row_of(rid) if rid is not None else 0 for rid in request_ids]
        self.index.zero_()
        if not any(rows):
            return False
        counts = torch.tensor([b - a for a, b in zip(starts, starts[1:])], dtype=torch.long)
        per_token = torch.repeat_interleave(torch.tensor(rows, dtype=torch.long), counts)
        for i, rid in enumerate(request_ids):
            # Positions, not this pass's offsets: a prompt chunked over passes, or partly
            # served from the prefix cache, starts a pass past its position 0.
            unsteered = self._steered_from.get(rid, 0) - (int(computed[i]) if computed is not None else 0)
            if rows[i] and unsteered > 0:
                per_token[starts[i] : starts[i] + min(unsteered, int(counts[i]))] = 0
        if not per_token.any():
            return False
        self.index[:total] = per_token.to(self.index.device, non_blocking=True)
        return True

    def add(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return add_rows(hidden, self.tables[layer], self.index)


def steering_salt(deltas: dict[int, torch.Tensor], steered_from: int = 0) -> str | None:
    """A prefix-cache salt for this steering: equal deltas give equal salts (they may share
    cached keys and values), different ones never do. None for an unsteered request.

    `steered_from`: the first steered position of a request that steers only its answer. Its
    keys and values are unsteered before that position and steered after, so they serve only a
    request with the same deltas steered from the same position (vLLM salts a chain of blocks
    from its first, so the salt cannot say "unsteered up to here")."""
    if not deltas:
        return None
    digest = hashlib.sha256()
    if steered_from:
        digest.update(b"answer-only:" + steered_from.to_bytes(8, "little"))
    for layer in sorted(deltas):
        digest.update(layer.to_bytes(4, "little"))
        digest.update(deltas[layer].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "steerlab-" + digest.hexdigest()[:32]
