"""steering.chat.openai.protocol alone: request parsing and the stop-sequence scanner."""

import pytest

from steering.chat.openai.protocol import OpenAIError, StopScanner, parse_request

LIMITS = dict(max_prompt_chars=1000, max_messages=32, max_new_tokens=64, default_new_tokens=16)


def parse(**body):
    return parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}, **LIMITS)


def test_it_maps_openai_parameters_to_generation_parameters():
    request = parse(max_completion_tokens=9, temperature=0, top_p=0.5, seed=3, stop="x", user="u",
                    stream=True, stream_options={"include_usage": True},
                    steering={"preferences": {"cost": -1}, "vector_set": 4})
    assert request.params == {"max_new_tokens": 9, "temperature": 0.0, "top_p": 0.5, "seed": 3}
    assert (request.stop, request.user, request.include_usage) == (["x"], "u", True)
    assert (request.preferences, request.vector_set_id) == ({"cost": -1.0}, 4)


def test_defaults_are_openais():
    request = parse()
    assert request.params == {"max_new_tokens": 16, "temperature": 1.0}
    assert request.stream is False and request.stop == [] and request.history == []


def test_text_parts_and_developer_messages_are_read():
    request = parse(messages=[{"role": "developer", "content": "Be brief."},
                              {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert request.prompt == "ab" and request.history == [{"role": "system", "content": "Be brief."}]


@pytest.mark.parametrize("body, param", [
    ({"n": 3}, "n"),
    ({"max_tokens": 65}, "max_tokens"),
    ({"max_tokens": 4, "max_completion_tokens": 5}, "max_completion_tokens"),
    ({"top_p": 0}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x" * 1001}]}, "messages"),
    ({"steering": {"preferences": {"cost": True}}}, "steering.preferences.cost"),
    ({"steering": {"layers": [1]}}, "steering"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"model": ""}, "model"),
])
def test_it_names_the_bad_parameter(body, param):
    with pytest.raises(OpenAIError) as caught:
        parse(**body)
    assert caught.value.status == 400 and caught.value.param == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


def test_the_scanner_holds_back_what_may_begin_a_stop_sequence():
    scanner = StopScanner(["END"])
    assert scanner.push("abc E") == "abc "
    assert scanner.push("N") == ""
    assert scanner.push("X more") == "ENX more"
    assert scanner.push(" and EN") == " and "
    assert scanner.push("D tail") == "" and scanner.stopped
    assert scanner.text == "abc ENX more and "


def test_the_scanner_releases_a_held_tail_at_the_end():
    scanner = StopScanner(["###"])
    assert scanner.push("hello #") == "hello "
    assert scanner.flush() == "#" and not scanner.stopped


def test_the_first_of_several_stop_sequences_wins():
    scanner = StopScanner(["b", "zz"])
    assert scanner.push("azzb") == "a" and scanner.text == "a"


def test_nul_characters_are_refused_wherever_they_are():
    with pytest.raises(OpenAIError) as caught:
        parse(messages=[{"role": "user", "content": "a\x00b"}])
    assert caught.value.param.startswith("messages")
    with pytest.raises(OpenAIError):
        parse(steering={"preferences": {"co\x00st": 1}})


def test_a_message_list_over_the_cap_is_refused_before_it_is_read():
    # Empty messages count nothing against max_prompt_chars, but each costs a render when the
    # list is fitted to the context: the count has its own cap.
    empty = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}] * 16
    parse(messages=[*empty[:-1], {"role": "user", "content": "hi"}])  # 32: at the cap
    with pytest.raises(OpenAIError) as caught:
        parse(messages=[*empty, {"role": "user", "content": "hi"}])
    error = caught.value.body()["error"]
    assert caught.value.status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == "messages" and error["code"] == "array_above_max_length" and "at most 32" in error["message"]
