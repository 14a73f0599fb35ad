"""A strict reader of GGUF control-vector files that may come from anyone.

The `gguf` package trusts a file's header: it allocates what the counts claim and reads past
the end as empty arrays, so 49 bytes claiming an array of 2^63 items loop forever, and
tensors aliased at one offset are each copied. This reader bounds every count, length and
byte range against `GgufLimits` and against the bytes the file really holds *before* it
allocates anything, and refuses a file that claims more than it has:

- the whole file at most `max_file_bytes`; read once into memory (a control vector is small:
  layers × n_embd × 4 bytes, 2.6 MB for a 70B model);
- at most `max_tensors` tensor infos (the model's layer count, when the caller knows it),
  names of at most 64 bytes (ggml's GGML_MAX_NAME), at most 4 dimensions, each ≥ 1, type F32
  only (llama.cpp's loader takes nothing else), and every tensor's bytes aligned, inside the
  data section and disjoint from every other's;
- at most `max_kv` metadata pairs, keys of at most 256 bytes, strings of at most
  `max_string_bytes`, arrays of at most `max_array_items` items and never arrays of arrays,
  and all metadata together at most `max_metadata_bytes`.

It needs nothing but the standard library, so `parse_isolated` runs it in a fresh `python -I`
(no torch, no Django, started in ~30 ms) under a wall-time limit and an address-space cap
(RLIMIT_AS), and takes back plain numbers: a file that still found a way to make it run away
costs a killed child, never the web process.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
GGML_MAX_NAME = 64
GGML_MAX_DIMS = 4
MAX_KEY_BYTES = 256
F32 = 0  # GGML_TYPE_F32

# GGUF value types: name, struct format (little-endian), size in bytes.
_SCALARS = {
    0: ("UINT8", "<B", 1), 1: ("INT8", "<b", 1), 2: ("UINT16", "<H", 2), 3: ("INT16", "<h", 2),
    4: ("UINT32", "<I", 4), 5: ("INT32", "<i", 4), 6: ("FLOAT32", "<f", 4), 7: ("BOOL", "<?", 1),
    10: ("UINT64", "<Q", 8), 11: ("INT64", "<q", 8), 12: ("FLOAT64", "<d", 8),
}
STRING, ARRAY = 8, 9
# ggml type names for messages (the common ones; others are named by number).
_GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 24: "I8", 25: "I16",
               26: "I32", 27: "I64", 28: "F64", 30: "BF16"}


class GgufError(ValueError):
    """A file this reader refuses, with the reason."""


@dataclass(frozen=True)
class GgufLimits:
    """What one untrusted file may hold; every bound is checked before anything is allocated."""

    max_file_bytes: int = 16 * 1024 * 1024
    max_tensors: int = 1024
    max_tensor_values: int = 1 << 20  # one direction's n_embd: 16k for today's largest models
    max_kv: int = 256
    max_string_bytes: int = 64 * 1024
    max_array_items: int = 4096
    max_metadata_bytes: int = 1024 * 1024


@dataclass
class TensorInfo:
    name: str
    shape: list[int]  # ggml order (fastest-varying first), as the file stores it
    ggml_type: int
    start: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return _GGML_TYPES.get(self.ggml_type, f"type {self.ggml_type}")


@dataclass
class GgufFile:
    version: int
    metadata: dict[str, object] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)


class _Cursor:
    """Reads forward through `data`, refusing any read past its end."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or n > len(self.data) - self.pos:
            raise GgufError(f"The file claims {n} bytes of {what} at byte {self.pos}, but holds only "
                            f"{len(self.data) - self.pos} more: it is truncated or corrupt")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, size: int, what: str):
        return struct.unpack(fmt, self.take(size, what))[0]

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def string(self, what: str, limit: int) -> str:
        length = self.u64(f"the length of {what}")
        if length > limit:
            raise GgufError(f"{what[0].upper()}{what[1:]} is {length} bytes long; at most {limit} are allowed")
        return bytes(self.take(length, what)).decode("utf-8", errors="replace")


def parse(data: bytes | memoryview, limits: GgufLimits = GgufLimits()) -> GgufFile:
    """The header, metadata and tensor table of a GGUF file held in `data`, every bound of
    `limits` checked before its allocation. Raises GgufError with the reason."""
    if len(data) > limits.max_file_bytes:
        raise GgufError(f"The file is {len(data)} bytes; a control vector may have at most {limits.max_file_bytes}")
    cur = _Cursor(data)
    if len(data) < 4 or bytes(cur.take(4, "the magic number")) != MAGIC:
        raise GgufError("Not a GGUF file: it does not start with the magic bytes 'GGUF'")
    version = cur.u32("the version")
    if version & 0xFFFF == 0 and version:
        raise GgufError("Big-endian GGUF files are not supported (llama.cpp on this byte order cannot load them either)")
    if version not in (2, 3):
        raise GgufError(f"GGUF version {version} is not supported (versions 2 and 3 are)")
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    if n_tensors > limits.max_tensors:
        raise GgufError(f"The file declares {n_tensors} tensors; at most {limits.max_tensors} are allowed "
                        "(one direction per block of the model)")
    if n_kv > limits.max_kv:
        raise GgufError(f"The file declares {n_kv} metadata entries; at most {limits.max_kv} are allowed")

    result = GgufFile(version=version)
    meta_start = cur.pos
    for _ in range(n_kv):
        key = cur.string("a metadata key", MAX_KEY_BYTES)
        value_type = cur.u32(f"the type of {key!r}")
        if key in result.metadata:
            raise GgufError(f"Metadata key {key!r} appears twice")
        result.metadata[key] = _value(cur, value_type, key, limits, nested=False)
        if cur.pos - meta_start > limits.max_metadata_bytes:
            raise GgufError(f"The metadata takes more than {limits.max_metadata_bytes} bytes")

    for _ in range(n_tensors):
        result.tensors.append(_tensor_info(cur, limits))

    alignment = result.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or not 1 <= alignment <= 1 << 16 \
            or alignment & (alignment - 1):
        raise GgufError(f"general.alignment must be a power of two up to 65536, not {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    end_of_data = data_start
    for info in result.tensors:
        relative = info.start
        if relative % alignment:
            raise GgufError(f"Tensor {info.name!r} starts at offset {relative}, not a multiple of the alignment {alignment}")
        info.start = data_start + relative
        if info.start + info.nbytes > len(data):
            raise GgufError(f"Tensor {info.name!r} claims bytes {info.start}…{info.start + info.nbytes} "
                            f"but the file has {len(data)}: it is truncated or corrupt")
        end_of_data = max(end_of_data, info.start + info.nbytes)
    ordered = sorted(result.tensors, key=lambda t: t.start)
    for before, after in zip(ordered, ordered[1:]):
        if after.start < before.start + before.nbytes:
            raise GgufError(f"Tensors {before.name!r} and {after.name!r} share bytes: each tensor needs its own data")
    return result


def _value(cur: _Cursor, value_type: int, key: str, limits: GgufLimits, *, nested: bool):
    if value_type in _SCALARS:
        _, fmt, size = _SCALARS[value_type]
        return cur.unpack(fmt, size, f"the value of {key!r}")
    if value_type == STRING:
        return cur.string(f"the string value of {key!r}", limits.max_string_bytes)
    if value_type == ARRAY and not nested:
        item_type = cur.u32(f"the item type of {key!r}")
        count = cur.u64(f"the item count of {key!r}")
        if count > limits.max_array_items:
            raise GgufError(f"Metadata {key!r} is an array of {count} items; at most {limits.max_array_items} are allowed")
        if item_type in _SCALARS:
            _, fmt, size = _SCALARS[item_type]
            raw = cur.take(count * size, f"the {count} items of {key!r}")  # bounded by the file's length
            return list(struct.unpack(f"<{count}{fmt[1]}", raw))
        if item_type == STRING:
            # Each string's bytes are checked against what is left as it is read; at least 8
            # bytes (its length) each, so a count the file cannot hold fails at once.
            if count * 8 > len(cur.data) - cur.pos:
                raise GgufError(f"Metadata {key!r} claims {count} strings, more than the rest of the file can hold")
            return [cur.string(f"an item of {key!r}", limits.max_string_bytes) for _ in range(count)]
        if item_type == ARRAY:
            raise GgufError(f"Metadata {key!r} is an array of arrays, which no control vector uses")
        raise GgufError(f"Metadata {key!r} is an array of unknown type {item_type}")
    raise GgufError(f"Metadata {key!r} has unknown value type {value_type}")


def _tensor_info(cur: _Cursor, limits: GgufLimits) -> TensorInfo:
    name = cur.string("a tensor name", GGML_MAX_NAME)
    n_dims = cur.u32(f"the dimension count of tensor {name!r}")
    if not 1 <= n_dims <= GGML_MAX_DIMS:
        raise GgufError(f"Tensor {name!r} has {n_dims} dimensions; ggml allows 1 to {GGML_MAX_DIMS}")
    shape = [cur.u64(f"a dimension of tensor {name!r}") for _ in range(n_dims)]
    ggml_type = cur.u32(f"the type of tensor {name!r}")
    offset = cur.u64(f"the offset of tensor {name!r}")
    values = 1
    for size in shape:
        if size < 1:
            raise GgufError(f"Tensor {name!r} has an empty dimension: shape {shape}")
        values *= size
        if values > limits.max_tensor_values:
            raise GgufError(f"Tensor {name!r} has shape {shape}; at most {limits.max_tensor_values} values are allowed")
    # Only F32 is ever read; any other type is refused by the caller with llama.cpp's message,
    # and its size need not be known (its byte range counts as empty).
    nbytes = 4 * values if ggml_type == F32 else 0
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, start=offset, nbytes=nbytes)


# -- in a child process -------------------------------------------------------------------------


@dataclass(frozen=True)
class Isolation:
    """How `parse_isolated` confines the reader: wall time (seconds) and address space (bytes)."""

    timeout_s: float = 10.0
    memory_bytes: int = 256 * 1024 * 1024


def read_file(path: str | Path, limits: GgufLimits) -> bytes:
    """The file's bytes, refusing one over `limits.max_file_bytes` without reading the rest."""
    with open(path, "rb") as source:
        data = source.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise GgufError(f"The file is over {limits.max_file_bytes} bytes, the most a control vector may have")
    return data


def parse_with_data(path: str | Path, limits: GgufLimits) -> tuple[GgufFile, list[bytes]]:
    """`parse` of the file at `path`, plus each F32 tensor's own bytes (in table order)."""
    data = read_file(path, limits)
    parsed = parse(data, limits)
    return parsed, [bytes(data[t.start:t.start + t.nbytes]) for t in parsed.tensors]


def parse_isolated(path: str | Path, limits: GgufLimits, isolation: Isolation) -> tuple[GgufFile, list[bytes]]:
    """`parse_with_data` in a child process under `isolation`'s time and memory caps. Raises
    GgufError for a refused file, and for a child that ran out of time or memory."""
    request = json.dumps({"path": str(path), "limits": asdict(limits), "memory_bytes": isolation.memory_bytes})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", __file__], input=request.encode(), capture_output=True,
            timeout=isolation.timeout_s, env={"PATH": "/usr/bin:/bin"}, check=False,
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        raise GgufError(f"Reading the file took longer than {isolation.timeout_s:g} s; it was stopped") from exc
    out = done.stdout
    if done.returncode != 0 or len(out) < 8:
        if b"MemoryError" in done.stderr or done.returncode < 0:
            raise GgufError(f"Reading the file needed more than {isolation.memory_bytes} bytes of memory; it was stopped")
        raise GgufError(f"The file could not be read (reader exit status {done.returncode})")
    size = struct.unpack("<Q", out[:8])[0]
    answer = json.loads(out[8:8 + size])
    if "error" in answer:
        raise GgufError(answer["error"])
    blob, tensors, chunks, at = out[8 + size:], [], [], 0
    for item in answer["tensors"]:
        tensors.append(TensorInfo(**item))
        chunks.append(blob[at:at + item["nbytes"]])
        at += item["nbytes"]
    return GgufFile(version=answer["version"], metadata=answer["metadata"], tensors=tensors), chunks


def _child() -> None:
    """The child's side: the request on stdin, the answer on stdout (an 8-byte length, JSON, then
    the tensors' bytes), a refusal as {"error": ...}."""
    import resource

    request = json.loads(sys.stdin.buffer.read())
    cap = int(request["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        parsed, chunks = parse_with_data(request["path"], GgufLimits(**request["limits"]))
        answer = {"version": parsed.version, "metadata": parsed.metadata,
                  "tensors": [asdict(t) for t in parsed.tensors]}
    except GgufError as exc:
        answer, chunks = {"error": str(exc)}, []
    text = json.dumps(answer).encode()
    out = sys.stdout.buffer
    out.write(struct.pack("<Q", len(text)))
    out.write(text)
    for chunk in chunks:
        out.write(chunk)
    out.flush()


if __name__ == "__main__":
    _child()
