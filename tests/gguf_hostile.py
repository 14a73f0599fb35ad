"""The hostile GGUF files of issue 23, item 1, built byte by byte (the `gguf` writer would
never write them): each once took the web process down through the `gguf` package's reader."""

from __future__ import annotations

import struct

UINT8, STRING, ARRAY = 0, 8, 9


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def array_bomb() -> bytes:
    """49 bytes: one metadata array of UINT8 claiming 2^63 items, at the end of the file."""
    return header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, UINT8, 2**63)


def aliased_tensors(count: int = 2000, values: int = 1 << 20) -> bytes:
    """`count` tensors direction.1…, each `values` floats, all at offset 0 of one data block."""
    table = b"".join(gguf_string(f"direction.{i}") + struct.pack("<IQIQ", 1, values, 0, 0) for i in range(1, count + 1))
    head = header(count, 0) + table
    head += b"\0" * (-len(head) % 32)
    return head + b"\0" * (4 * values)


def million_strings(count: int = 1_000_000) -> bytes:
    """A metadata array of `count` empty strings (8 bytes each)."""
    return header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, STRING, count) + b"\0" * (8 * count)


def million_uint8(count: int = 1_000_000) -> bytes:
    """A metadata array of `count` uint8."""
    return header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, UINT8, count) + b"\0" * count


HOSTILE = {
    "array-bomb": array_bomb,
    "aliased-tensors": aliased_tensors,
    "million-strings": million_strings,
    "million-uint8": million_uint8,
}
