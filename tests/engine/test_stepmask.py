"""The decode loop's padding mask is kept and extended in place (stepmask.py): the 4D mask it
hands a decode step is exactly the one transformers would build from the 2D mask, through rows
leaving, merges and the padding trim; and the tokens are the same as with the mask rebuilt."""

import pytest
import torch
from transformers.masking_utils import create_causal_mask

from steering.engine import DecodeBatch, GenerationParams, GenerationRequest, SteeringHooks
from steering.engine.stepmask import StepMask, decode_mask_applies

from tests.tiny_models import CORE_FAMILIES, build_tiny

PROMPTS = ["hello world", "please find attached the documents you requested yesterday", "yeah", "good morning to you all"]


def _requests(loaded, lengths, prompts=PROMPTS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        GenerationRequest(
            prompt_ids=loaded.chat_ids(p), params=GenerationParams(max_new_tokens=n),
            steering={1: 4.0 * torch.randn(loaded.hidden_size, generator=g, dtype=torch.float64)} if i % 2 else {},
        )
        for i, (p, n) in enumerate(zip(prompts, lengths))
    ]


@torch.inference_mode()
def _built_by_transformers(batch: DecodeBatch) -> torch.Tensor | None:
    """The mask transformers makes from the 2D padding mask for the batch's next decode step."""
    model = batch.loaded.model
    past = batch.cache.get_seq_length()
    return create_causal_mask(
        config=model.config, input_embeds=model.get_input_embeddings()(batch.input_ids), attention_mask=batch.mask,
        cache_position=torch.arange(past, past + 1), past_key_values=batch.cache, position_ids=batch._positions,
    )


def _tokens(batch: DecodeBatch, check=None) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {}
    while not batch.done:
        for event in batch.step():
            if event.token_id is not None:
                tokens.setdefault(event.index, []).append(event.token_id)
        if check is not None and not batch.done:
            check(batch)
    return tokens


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_the_kept_mask_is_the_one_transformers_builds_and_the_tokens_do_not_change(family):
    loaded = build_tiny(family)
    loaded.stop_ids = frozenset()
    hooks = SteeringHooks(loaded.layers, [1])
    applies = decode_mask_applies(loaded.model)
    assert applies == (family != "gemma2")  # gemma2 has sliding-window layers: they keep the 2D mask
    seen = []

    def check(batch):
        given = batch._mask.decode_mask()
        if applies:
            built = _built_by_transformers(batch)
            seen.append(given.ndim)
            # A padded batch: the same boolean 4D mask; none padded: the 2D mask, which
            # transformers turns into no mask at all.
            assert (built is None and given.ndim == 2) or torch.equal(given, built)

    # Rows of different lengths leave one by one (the longest prompt's row first, so the padding
    # trim runs too); a second batch joins after two steps.
    batch = DecodeBatch(loaded, hooks, _requests(loaded, [9, 3, 12, 5]))
    batch.step()
    batch.step()
    other = DecodeBatch(loaded, hooks, _requests(loaded, [4, 7], ["the weather today", "hi"], seed=1), keys=[10, 11])
    first = other.step()
    batch.merge(other)
    kept = _tokens(batch, check)
    if applies:
        assert 4 in seen  # the kept mask was used, not only the 2D fallback

    # The same run with the mask rebuilt by transformers at every step.
    batch = DecodeBatch(loaded, hooks, _requests(loaded, [9, 3, 12, 5]))
    batch._decode_mask = False
    head = [batch.step(), batch.step()]
    other = DecodeBatch(loaded, hooks, _requests(loaded, [4, 7], ["the weather today", "hi"], seed=1), keys=[10, 11])
    assert other.step() == first
    batch.merge(other)
    rebuilt = _tokens(batch)
    assert head and kept == rebuilt


def test_a_row_alone_gets_no_4d_mask():
    # No padding: transformers gives SDPA no mask, and so do we (another kernel could round differently).
    loaded = build_tiny("llama")
    batch = DecodeBatch(loaded, None, _requests(loaded, [4])[:1])
    batch.step()
    assert batch._mask.decode_mask().ndim == 2


def test_extend_writes_in_place_and_grows_with_room():
    mask = StepMask(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert mask.value.dtype == torch.bool and mask.decode_mask().shape == (2, 1, 1, 3)
    mask.extend()
    buffer = mask._buffer
    assert buffer.shape[1] > 4  # room reserved: the next steps write into it
    for _ in range(3):
        mask.extend()
    assert mask._buffer is buffer
    assert mask.value.tolist() == [[False] + [True] * 6, [True] * 7]
    mask.select(torch.tensor([1]))
    assert mask.value.tolist() == [[True] * 7] and mask.decode_mask().ndim == 2  # no row padded now
    mask.extend()
    assert mask.value.shape == (1, 8)
    mask.value = torch.tensor([[False, True], [True, True]])  # assigning adopts the tensor
    assert mask.decode_mask()[:, 0, 0].tolist() == [[False, True], [True, True]]
