import pytest
import torch
from torch import nn

from steering.engine import ModelNotFound, UnsupportedModel, find_layers, load_model
from steering.engine.loading import end_of_turn_ids

from tests.tiny_models import ALL_FAMILIES, NUM_LAYERS, build_tiny


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_it_finds_the_decoder_layers_of_every_family(family):
    loaded = build_tiny(family)
    assert loaded.num_layers == NUM_LAYERS
    assert loaded.hidden_size == 64
    assert all(isinstance(layer, nn.Module) for layer in loaded.layers)


def test_it_names_the_model_class_it_cannot_handle():
    class Strange(nn.Module):
        pass

    with pytest.raises(UnsupportedModel, match="Strange"):
        find_layers(Strange())


def test_it_loads_a_local_model_directory_in_float32_on_cpu(tmp_path):
    tiny = build_tiny("llama", dtype=torch.float32)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.dtype == torch.float32
    assert loaded.device.type == "cpu"
    assert loaded.model_id == str(tmp_path)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(loaded.model(ids).logits, tiny.model(ids).logits, atol=1e-5)


@pytest.mark.parametrize("name", ["/no/such/model", "./missing-dir", "weights.gguf"])
def test_it_says_clearly_when_a_local_model_is_not_there(name):
    with pytest.raises(ModelNotFound, match="not found"):
        load_model(name, device="cpu")


def test_it_refuses_cuda_when_there_is_none():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model("embedded", device="cuda")


def test_it_stops_on_the_end_of_turn_token_even_when_eos_says_otherwise():
    tiny = build_tiny("llama")
    tiny.tokenizer.eos_token = "<|endoftext|>"
    ids = end_of_turn_ids(tiny.model, tiny.tokenizer)
    assert tiny.tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert tiny.tokenizer.convert_tokens_to_ids("<|endoftext|>") in ids


def test_it_formats_prompts_with_the_chat_template():
    tiny = build_tiny("gpt2")
    text = tiny.tokenizer.decode(tiny.chat_ids("hello", system="be nice"))
    assert text == "<|system|>be nice<|im_end|><|user|>hello<|im_end|><|assistant|>"


def test_the_site_system_prompt_frames_a_chat_that_brings_none_and_leads_a_requests_own():
    tiny = build_tiny("gpt2")
    tiny.system_prompt = "Answer directly."
    assert tiny.tokenizer.decode(tiny.chat_ids("hello")) == "<|system|>Answer directly.<|im_end|><|user|>hello<|im_end|><|assistant|>"
    # prompt-with-steering's preferences come after the site's framing, in the same turn
    assert tiny.tokenizer.decode(tiny.chat_ids("hello", system="be nice")) == (
        "<|system|>Answer directly.\n\nbe nice<|im_end|><|user|>hello<|im_end|><|assistant|>"
    )
    # a /v1 caller's own system turn frames its chat instead: the site's is not added
    own = [{"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": "hello"}]
    assert tiny.tokenizer.decode(tiny.chat_ids(own)) == "<|system|>Talk like a pirate.<|im_end|><|user|>hello<|im_end|><|assistant|>"
    tiny.system_prompt = None
    assert tiny.tokenizer.decode(tiny.chat_ids("hello")) == "<|user|>hello<|im_end|><|assistant|>"


def test_a_template_without_a_system_role_gets_the_instructions_in_the_first_user_turn():
    tiny = build_tiny("gemma2")
    # Gemma's own template refuses a system turn with this exception
    tiny.tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + tiny.tokenizer.chat_template
    )
    tiny.system_prompt = "Answer directly."
    assert tiny.tokenizer.decode(tiny.chat_ids("hello", system="be nice")) == (
        "<|user|>Answer directly.\n\nbe nice\n\nhello<|im_end|><|assistant|>"
    )
    # any other template error is the template's, not ours to paper over
    tiny.tokenizer.chat_template = "{{ raise_exception('broken template') }}"
    with pytest.raises(Exception, match="broken template"):
        tiny.chat_ids("hello")


def test_the_copy_free_grouped_query_attention_gives_the_same_logits():
    from transformers import AutoModelForCausalLM

    from steering.engine.loading import pad_left

    reference = build_tiny("llama")  # 4 query heads share 2 key/value heads
    assert reference.model.config._attn_implementation == "steerlab_sdpa"
    plain = AutoModelForCausalLM.from_config(reference.model.config, dtype=torch.float64, attn_implementation="sdpa")
    plain.load_state_dict(reference.model.state_dict())
    plain.eval()
    ids, mask, positions = pad_left([[5, 6, 7, 8, 9], [5, 6]], reference.pad_id, reference.device)
    with torch.inference_mode():
        ours = reference.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        theirs = plain(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert plain.config._attn_implementation == "sdpa"
    assert torch.allclose(ours[mask.bool()], theirs[mask.bool()], atol=1e-10)
