"""Training on tool calls: the calls are rendered as the model is later asked, and trained."""

from __future__ import annotations

from tiny import build_family_tokenizer
from tunelab.data.example import ChatExample
from tunelab.data.tool_text import write_call
from tunelab.engine.dataset import IGNORE_INDEX, tokenize_examples
from tunelab.engine.generate import encode_chat

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = {
    "id": "c1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}
QUESTION = {"role": "user", "content": "Weather in Paris?"}


def conversation(call_weight: int = 1) -> ChatExample:
    messages = (
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [CALL], "weight": call_weight},
        {"role": "tool", "tool_call_id": "c1", "content": "18 degrees"},
        {"role": "assistant", "content": "Eighteen degrees."},
    )
    return ChatExample(messages, extra={"tools": [WEATHER]})


def trained_text(tokenizer, example) -> str:
    pairs = zip(example.input_ids, example.labels, strict=True)
    trained = [t for t, label in pairs if label != IGNORE_INDEX]
    return tokenizer.decode(trained)


def test_default_format_trains_the_call_block_and_not_the_tool_result(tokenizer):
    [example] = tokenize_examples([conversation()], tokenizer, 1024).examples

    call = write_call("weather", '{"city": "Paris"}')
    assert trained_text(tokenizer, example) == f"{call}<|im_end|>Eighteen degrees.<|im_end|>"
    assert "<tool_response>\n18 degrees\n</tool_response>" in tokenizer.decode(example.input_ids)


def test_training_renders_the_prompt_the_model_is_asked_with(tokenizer):
    [example] = tokenize_examples([conversation()], tokenizer, 1024).examples

    asked = encode_chat(tokenizer, [QUESTION], [WEATHER])
    assert example.input_ids[: len(asked)] == asked
    assert example.labels[len(asked)] != IGNORE_INDEX  # the call is the first trained token
    assert all(label == IGNORE_INDEX for label in example.labels[: len(asked)])


def test_a_call_with_weight_zero_is_context_only(tokenizer):
    [example] = tokenize_examples([conversation(call_weight=0)], tokenizer, 1024).examples

    assert trained_text(tokenizer, example) == "Eighteen degrees.<|im_end|>"
    assert "<tool_call>" in tokenizer.decode(example.input_ids)


def test_a_template_with_tools_trains_the_call_in_its_own_format():
    qwen = build_family_tokenizer("qwen3")
    [example] = tokenize_examples([conversation()], qwen, 2048).examples

    trained = trained_text(qwen, example)
    assert '"name": "weather"' in trained and '"city": "Paris"' in trained
    assert "18 degrees" not in trained
    assert "<tools>" in qwen.decode(example.input_ids)  # the template's own tool list
