"""steering/engine/ggufread.py: the strict reader of control-vector files from anyone. Every
bound is checked before anything is allocated, a file that claims more than it holds is
refused with a message, what the `gguf` package writes reads back the same, and the child
process's time and memory caps really stop it."""

from __future__ import annotations

import struct
import time
import tracemalloc

import gguf
import numpy as np
import pytest

from steering.engine.controlvector import ControlVectorError, read_control_vector
from steering.engine.ggufread import GgufError, GgufLimits, Isolation, parse, parse_isolated, parse_with_data
from tests.engine.test_controlvector import write_raw
from tests.gguf_hostile import ARRAY, HOSTILE, STRING, UINT8, gguf_string, header


def tensor_entry(name: str, shape=(8,), ggml_type=0, offset=0) -> bytes:
    return gguf_string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape) + \
        struct.pack("<IQ", ggml_type, offset)


def with_data(head: bytes, data: bytes) -> bytes:
    return head + b"\0" * (-len(head) % 32) + data


def kv(key: str, value_type: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", value_type) + payload


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_file_of_the_issue_is_refused_at_once_in_little_memory(name):
    data = HOSTILE[name]()
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(GgufError, match="at most"):
        parse(data, GgufLimits(max_tensors=30, max_file_bytes=16 << 20))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 1 << 20  # the gguf package: minutes, gigabytes


def test_aliased_tensors_are_refused_even_when_few():
    data = with_data(header(2, 0) + tensor_entry("direction.1") + tensor_entry("direction.2"), b"\0" * 32)
    with pytest.raises(GgufError, match="share bytes"):
        parse(data)
    overlapping = with_data(header(2, 0) + tensor_entry("direction.1", (16,)) + tensor_entry("direction.2", (8,), offset=32),
                            b"\0" * 96)
    with pytest.raises(GgufError, match="share bytes"):
        parse(overlapping)
    apart = with_data(header(2, 0) + tensor_entry("direction.1", (8,)) + tensor_entry("direction.2", (8,), offset=32),
                      b"\0" * 64)
    assert [t.name for t in parse(apart).tensors] == ["direction.1", "direction.2"]


@pytest.mark.parametrize("data, words", [
    (b"GGU", "magic"),
    (b"GGML" + b"\0" * 20, "magic"),
    (header(0, 0, version=1), "version 1"),
    (b"GGUF" + struct.pack(">I", 3) + b"\0" * 16, "Big-endian"),
    (header(0, 0)[:-3], "truncated"),
    (header(1, 0) + tensor_entry("direction.1"), "truncated"),  # the tensor's 32 bytes are missing
    (with_data(header(1, 0) + tensor_entry("direction.1", offset=8), b"\0" * 64), "alignment"),
    (with_data(header(1, 0) + tensor_entry("direction.1", (8, 2, 1, 1, 1)), b""), "dimensions"),
    (with_data(header(1, 0) + tensor_entry("direction.1", (0,)), b""), "empty dimension"),
    (with_data(header(1, 0) + tensor_entry("direction.1", (2**40,)), b""), "values are allowed"),
    (with_data(header(1, 0) + tensor_entry("direction." + "1" * 70), b""), "at most 64"),
    (header(0, 2**40), "metadata entries"),
    (header(0, 1) + kv("a", STRING, struct.pack("<Q", 2**62)), "at most"),
    (header(0, 1) + kv("a", STRING, struct.pack("<Q", 100) + b"x"), "truncated"),
    (header(0, 1) + kv("a", ARRAY, struct.pack("<IQ", UINT8, 100) + b"x"), "truncated"),
    (header(0, 1) + kv("a", ARRAY, struct.pack("<IQ", STRING, 4000) + b"\0" * 16), "more than the rest"),
    (header(0, 1) + kv("a", ARRAY, struct.pack("<IQ", ARRAY, 1)), "array of arrays"),
    (header(0, 1) + kv("a", 77, b""), "unknown value type"),
    (header(0, 2) + kv("a", UINT8, b"\1") + kv("a", UINT8, b"\2"), "twice"),
    (header(0, 1) + kv("general.alignment", 4, struct.pack("<I", 3)), "power of two"),
])
def test_it_refuses_what_does_not_hold_together_with_a_message(data, words):
    with pytest.raises(GgufError, match=words):
        parse(data)


def test_the_metadata_as_a_whole_is_bounded():
    strings = header(0, 3) + b"".join(kv(f"k{i}", STRING, gguf_string("x" * 1000)) for i in range(3))
    assert len(parse(strings).metadata) == 3
    with pytest.raises(GgufError, match="metadata takes more than 2500 bytes"):
        parse(strings, GgufLimits(max_metadata_bytes=2500))


def test_the_file_size_is_bounded_before_it_is_read(tmp_path):
    path = tmp_path / "big.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 5000)
    with pytest.raises(GgufError, match="over 4096 bytes"):
        parse_with_data(path, GgufLimits(max_file_bytes=4096))


def test_what_the_gguf_package_writes_reads_back_the_same(tmp_path):
    path = tmp_path / "w.gguf"
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    writer.add_float64("steerlab.strength", -0.25)
    writer.add_bool("flag", True)
    writer.add_array("steerlab.labels", ["Casual", "Formal"])
    writer.add_array("numbers", [1, 2, 3])
    for layer in (1, 3):
        writer.add_tensor(f"direction.{layer}", np.arange(16, dtype=np.float32) * layer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    ours = read_control_vector(path)
    theirs = gguf.GGUFReader(str(path))
    assert ours.model_hint == "llama"
    assert ours.metadata == {"general.architecture": "controlvector", "controlvector.layer_count": 2,
                             "steerlab.strength": -0.25, "flag": True, "steerlab.labels": ["Casual", "Formal"],
                             "numbers": [1, 2, 3]}
    for tensor in theirs.tensors:
        layer = int(tensor.name.split(".")[1])
        assert ours.directions[layer].tolist() == np.asarray(tensor.data).tolist()


def test_the_child_process_reads_the_same_as_this_one(tmp_path):
    path = write_raw(tmp_path / "ok.gguf", {"direction.1": np.arange(8, dtype=np.float32),
                                            "direction.4": np.full(8, -2.5, np.float32)})
    here, there = read_control_vector(path), read_control_vector(path, isolation=Isolation())
    assert here.metadata == there.metadata and here.model_hint == there.model_hint == "llama"
    assert {k: v.tolist() for k, v in here.directions.items()} == {k: v.tolist() for k, v in there.directions.items()}
    with pytest.raises(ControlVectorError, match="at most 1 are allowed"):
        read_control_vector(path, limits=GgufLimits(max_tensors=1), isolation=Isolation())


def test_the_child_process_is_stopped_at_its_time_and_memory_caps(tmp_path):
    path = tmp_path / "big.gguf"
    # A valid file of 12 MiB: reading it (the bytes, each tensor's copy) needs well over 16 MiB.
    values = 1 << 20
    path.write_bytes(with_data(header(3, 0) + b"".join(
        tensor_entry(f"direction.{i + 1}", (values,), offset=4 * values * i) for i in range(3)), b"\0" * 12 * values))
    assert len(parse_isolated(path, GgufLimits(), Isolation())[1]) == 3
    with pytest.raises(GgufError, match="more than 16777216 bytes of memory"):
        parse_isolated(path, GgufLimits(), Isolation(memory_bytes=16 << 20))
    started = time.perf_counter()
    with pytest.raises(GgufError, match="longer than 0.001 s"):
        parse_isolated(path, GgufLimits(), Isolation(timeout_s=0.001))
    assert time.perf_counter() - started < 2
