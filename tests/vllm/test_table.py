"""The steering table and its op, without vLLM (these run in the main virtualenv too)."""

from __future__ import annotations

import pytest
import torch

from steering.vllm_inference.steering_table import (
    SteeringRows,
    SteeringTable,
    TableFull,
    add_rows,
    pack_deltas,
    unpack_deltas,
)


def table(rows: int = 3) -> SteeringTable:
    return SteeringTable(num_layers=4, hidden_size=5, rows=rows, max_tokens=16, dtype=torch.float32, device="cpu")


def test_each_token_reads_its_requests_row_and_padding_reads_zeros():
    t = table()
    t.bind("ra", 1, {1: torch.full((5,), 1.0), 2: torch.full((5,), 2.0)})
    t.bind("rb", 2, {1: torch.full((5,), -1.0)})
    # Three requests: ra has 3 tokens (a prefill chunk), plain 1, rb 2; then 2 padding tokens.
    t.fill_index(["ra", "plain", "rb"], [0, 3, 4, 6])
    hidden = torch.zeros(8, 5)
    out = t.add(1, hidden)
    assert out[:, 0].tolist() == [1, 1, 1, 0, -1, -1, 0, 0]
    assert t.add(2, hidden)[:, 0].tolist() == [2, 2, 2, 0, 0, 0, 0, 0]
    assert t.add(0, hidden).abs().sum() == 0  # a layer no request steers adds nothing
    assert torch.equal(hidden, torch.zeros(8, 5)), "the op returns a new tensor"


def test_a_full_table_refuses_and_a_freed_row_is_reused():
    rows = SteeringRows(num_layers=4, hidden_size=5, rows=2)
    first = rows.allocate({0: torch.ones(5)})
    rows.allocate({0: torch.ones(5)})
    with pytest.raises(TableFull):
        rows.allocate({0: torch.ones(5)})
    rows.free(first)
    rows.free(first)  # twice: still one row back
    assert rows.free_rows == 1
    assert rows.allocate({3: torch.ones(5)}) == first


def test_an_unbound_row_is_zeroed_and_a_rebound_one_holds_only_its_new_deltas():
    t = table()
    t.bind("ra", 1, {0: torch.ones(5), 3: torch.ones(5)})
    t.unbind("ra")
    assert t.tables[:, 1].abs().sum() == 0
    t.bind("rb", 1, {0: torch.ones(5), 3: torch.ones(5)})
    t.bind("rc", 1, {2: torch.full((5,), 3.0)})  # the row went to rc before rb's end was heard
    t.unbind("rb")
    assert t.tables[2, 1].sum() == 15 and t.tables[0, 1].abs().sum() == 0, "rc's row is rc's alone"
    assert t.row_of("rc") == 1 and t.row_of("rb") == 0


def test_bad_steering_is_refused_before_taking_a_row():
    rows = SteeringRows(num_layers=4, hidden_size=5, rows=3)
    with pytest.raises(ValueError, match="layer 9"):
        rows.allocate({9: torch.ones(5)})
    with pytest.raises(ValueError, match="shape"):
        rows.allocate({0: torch.ones(4)})
    assert rows.free_rows == 3
    with pytest.raises(ValueError, match="outside the table"):
        table().bind("r", 4, {})


def test_deltas_travel_as_plain_ints_and_bytes_and_come_back_equal():
    deltas = {7: torch.randn(5), 2: torch.randn(5, dtype=torch.bfloat16)}
    packed = pack_deltas(deltas)
    assert [layer for layer, _ in packed] == [2, 7]
    assert all(type(layer) is int and type(data) is bytes for layer, data in packed)
    back = unpack_deltas(packed)
    assert torch.equal(back[7], deltas[7]) and torch.equal(back[2], deltas[2].float())


def test_the_op_traces_under_torch_compile():
    t = table()
    t.bind("r", 1, {2: torch.arange(5.0)})
    t.fill_index(["r"], [0, 2])
    compiled = torch.compile(lambda h: add_rows(h, t.tables[2], t.index), backend="aot_eager", fullgraph=True)
    hidden = torch.randn(3, 5)
    assert torch.equal(compiled(hidden), hidden + torch.stack([torch.arange(5.0)] * 2 + [torch.zeros(5)]))


def test_a_model_without_known_decoder_layers_gets_a_clear_error():
    from steering.vllm_inference.model_runner import SteeringUnsupported, find_decoder_layers

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(SteeringUnsupported, match="Odd.*STEERLAB_ENGINE=builtin"):
        find_decoder_layers(Odd())


def test_an_answer_only_request_reads_zeros_before_its_last_prompt_position_in_every_chunk():
    """Its prompt of 7 tokens (positions 0–6) prefilled in chunks of 4 and 3, then decoded,
    beside a request that steers its prompt too: positions 0–5 read zeros, 6 on its row."""
    t = table()
    t.bind("ra", 1, {1: torch.ones(5)}, steered_from=6)
    t.bind("rb", 2, {1: torch.full((5,), 2.0)})

    def pass_(computed, starts):
        steered = t.fill_index(["ra", "rb"], starts, computed)
        return steered, t.add(1, torch.zeros(8, 5))[:, 0].tolist()

    assert pass_([0, 0], [0, 4, 6]) == (True, [0, 0, 0, 0, 2, 2, 0, 0])  # ra's first chunk, rb's prompt
    assert pass_([4, 2], [0, 3, 4]) == (True, [0, 0, 1, 2, 0, 0, 0, 0])  # ra's last chunk: position 6 steered
    assert pass_([7, 3], [0, 1, 2]) == (True, [1, 2, 0, 0, 0, 0, 0, 0])  # decoding
    t.unbind("rb")
    assert pass_([0, 0], [0, 4, 4]) == (False, [0] * 8), "a pass with no steered token says so"
    t.unbind("ra")
    t.bind("ra", 1, {1: torch.ones(5)})
    assert pass_([0, 0], [0, 4, 4])[1][:4] == [1] * 4, "unbinding forgets the policy"
