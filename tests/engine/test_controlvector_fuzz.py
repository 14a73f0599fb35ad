"""The strict GGUF reader fuzzed with hypothesis: structured headers, metadata and tensor
tables with hostile counts, lengths and offsets, and random mutations of a valid file. Each
case must end in a result or a GgufError (never another exception), within a time limit
(hypothesis' deadline) and a memory limit (tracemalloc's peak), and everything it returns must
lie inside the file. A fixed budget (derandomized, a set number of examples) keeps it to a
few seconds in CI; a last pass sends mutated files through the child process and its caps."""

from __future__ import annotations

import struct
import tracemalloc

from hypothesis import HealthCheck, given, settings, strategies as st

from steering.engine.ggufread import GgufError, GgufLimits, Isolation, parse, parse_isolated
from tests.gguf_hostile import gguf_string, header

LIMITS = GgufLimits(max_file_bytes=1 << 20, max_tensors=64, max_tensor_values=4096)
BUDGET = settings(max_examples=300, derandomize=True, deadline=500, suppress_health_check=[HealthCheck.too_slow],
                  database=None)
# What parsing may allocate beyond the file itself: the bounded metadata and tensor table.
MEMORY_SLACK = 4 * LIMITS.max_metadata_bytes

counts = st.one_of(st.integers(0, 8), st.sampled_from([2**16, 2**31, 2**32 - 1, 2**62, 2**63, 2**64 - 1]))
value_types = st.integers(0, 13)


def checked_parse(data: bytes) -> None:
    tracemalloc.start()
    try:
        parsed = parse(data, LIMITS)
    except GgufError:
        return
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < len(data) + MEMORY_SLACK, f"parsing {len(data)} bytes took {peak} bytes"
    assert len(parsed.tensors) <= LIMITS.max_tensors and len(parsed.metadata) <= LIMITS.max_kv
    spans = sorted((t.start, t.start + t.nbytes) for t in parsed.tensors)
    assert all(0 <= start <= end <= len(data) for start, end in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


@st.composite
def values(draw, value_type: int) -> bytes:
    if value_type == 8:  # a string: a length, maybe a lie, and some bytes
        return struct.pack("<Q", draw(counts)) + draw(st.binary(max_size=16))
    if value_type == 9:  # an array: an item type, a count, maybe a lie, and some bytes
        return struct.pack("<IQ", draw(value_types), draw(counts)) + draw(st.binary(max_size=64))
    return draw(st.binary(max_size=8))


@st.composite
def files(draw) -> bytes:
    n_kv, n_tensors = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    out = header(draw(st.one_of(st.just(n_tensors), counts)), draw(st.one_of(st.just(n_kv), counts)),
                 version=draw(st.sampled_from([3, 3, 2, 1, 0x03000000])))
    for _ in range(n_kv):
        key = draw(st.sampled_from(["general.alignment", "controlvector.model_hint", "steerlab.labels", "a"]))
        value_type = draw(value_types)
        out += gguf_string(key) + struct.pack("<I", value_type) + draw(values(value_type))
    for i in range(n_tensors):
        dims = draw(st.lists(st.one_of(st.integers(0, 64), counts), min_size=0, max_size=5))
        out += gguf_string(draw(st.sampled_from([f"direction.{i + 1}", "direction.1", "x" * 80])))
        out += struct.pack("<I", draw(st.one_of(st.just(len(dims)), counts.filter(lambda n: n < 2**32))))
        out += b"".join(struct.pack("<Q", d % 2**64) for d in dims)
        out += struct.pack("<IQ", draw(st.sampled_from([0, 0, 1, 30, 2**31])), draw(st.one_of(st.integers(0, 512), counts)))
    out += b"\0" * (-len(out) % 32)
    return out + draw(st.binary(max_size=2048))


def valid_file() -> bytes:
    head = header(2, 2) + gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("controlvector")
    head += gguf_string("steerlab.labels") + struct.pack("<IIQ", 9, 8, 2) + gguf_string("less") + gguf_string("more")
    for i in range(2):
        head += gguf_string(f"direction.{i + 1}") + struct.pack("<IQIQ", 1, 16, 0, 64 * i)
    head += b"\0" * (-len(head) % 32)
    return head + struct.pack("<32f", *range(32))


VALID = valid_file()


@st.composite
def mutations(draw) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "word", "cut", "insert"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "word" and at + 8 <= len(data):
            data[at:at + 8] = struct.pack("<Q", draw(counts) % 2**64)
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


def test_the_valid_file_parses():
    parsed = parse(VALID, LIMITS)
    assert [t.name for t in parsed.tensors] == ["direction.1", "direction.2"]
    assert parsed.metadata["steerlab.labels"] == ["less", "more"]


@BUDGET
@given(files())
def test_structured_headers_metadata_and_tensor_tables(data):
    checked_parse(data)


@BUDGET
@given(mutations())
def test_random_mutations_of_a_valid_file(data):
    checked_parse(data)


@settings(max_examples=15, derandomize=True, deadline=None, database=None)
@given(mutations())
def test_mutations_through_the_child_process_and_its_caps(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.gguf"
    path.write_bytes(data)
    try:
        parse_isolated(path, LIMITS, Isolation(timeout_s=5, memory_bytes=128 << 20))
    except GgufError:
        pass
