"""An Ollama Modelfile for an exported GGUF, carrying the model's chat template.

Ollama templates are Go templates, not Jinja. Most chat templates wrap each message in a fixed
text that depends only on its role (ChatML, Llama 3, …), so the Jinja template is rendered on
placeholder conversations and the text around each placeholder becomes that role's wrapper:
before and after a system, user or assistant message, the head written when there is no
system message (a default system prompt), and the generation prompt. The wrappers are then
checked by re-rendering longer conversations both ways; a template that is not of this form
gets no TEMPLATE line, and Ollama falls back on the Jinja template stored in the GGUF.
"""

from __future__ import annotations

from dataclasses import dataclass

_S, _U, _U2, _A = "Ssystemplaceholder", "Uuserplaceholder", "Vuserplaceholder", "Aanswerplaceholder"


@dataclass(frozen=True)
class RoleWrappers:
    head: str  # written first when the conversation has no system message
    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """What the Go template renders, in Python (to check against the Jinja render)."""
        text = "" if messages and messages[0]["role"] == "system" else self.head
        for message in messages:
            before, after = getattr(self, message["role"])
            text += before + message["content"] + after
        return text + (self.generation if add_generation_prompt else "")

    def go_template(self) -> str:
        def literal(text: str) -> str:
            return text.replace("{{", '{{ "{{" }}')

        (sb, sa), (ub, ua), (ab, aa) = self.system, self.user, self.assistant
        return (
            '{{ if not (and .Messages (eq (index .Messages 0).Role "system")) }}'
            f"{literal(self.head)}{{{{ end }}}}"
            "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            f'{{{{ if eq .Role "system" }}}}{literal(sb)}{{{{ .Content }}}}{literal(sa)}'
            f'{{{{ else if eq .Role "user" }}}}{literal(ub)}{{{{ .Content }}}}{literal(ua)}'
            f'{{{{ else if eq .Role "assistant" }}}}{literal(ab)}{{{{ .Content }}}}'
            f"{{{{ if not $last }}}}{literal(aa)}{{{{ end }}}}{{{{ end }}}}"
            f'{{{{ if and $last (ne .Role "assistant") }}}}{literal(self.generation)}{{{{ end }}}}'
            "{{ end }}"
        )


def role_wrappers(tokenizer) -> RoleWrappers | None:
    """The per-role wrappers of the tokenizer's chat template, or None if it has none."""
    try:
        wrappers = _derive(tokenizer)
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    if wrappers is None or not _reproduces(wrappers, tokenizer):
        return None
    return wrappers


def modelfile(tokenizer, gguf_name: str) -> str:
    """The Modelfile text: FROM the GGUF, the chat template, stop at the end-of-turn token."""
    lines = [f"FROM ./{gguf_name}"]
    wrappers = role_wrappers(tokenizer)
    if wrappers is not None and '"""' not in wrappers.go_template():
        lines.append(f'TEMPLATE """{wrappers.go_template()}"""')
    else:
        lines.append("# the chat template is not role-by-role: Ollama reads the one in the GGUF")
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if wrappers is not None and wrappers.assistant[1].strip():
        stops.insert(0, wrappers.assistant[1].strip())
    for stop in dict.fromkeys(stops):
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    # llama.cpp adds the BOS token itself (the GGUF says whether): the template must not.
    bos = tokenizer.bos_token if "bos_token" in (tokenizer.chat_template or "") else None
    return text[len(bos) :] if bos and text.startswith(bos) else text


def _between(text: str, first: str, second: str) -> str:
    start = text.index(first) + len(first)
    return text[start : text.index(second, start)]


def _derive(tokenizer) -> RoleWrappers | None:
    user, assistant = {"role": "user", "content": _U}, {"role": "assistant", "content": _A}
    one = _render(tokenizer, [user])
    exchange = _render(tokenizer, [user, assistant])
    two = _render(tokenizer, [user, assistant, {"role": "user", "content": _U2}])
    with_system = _render(tokenizer, [{"role": "system", "content": _S}, user])
    user_after = one[one.index(_U) + len(_U) :]
    assistant_after = exchange[exchange.index(_A) + len(_A) :]
    between = _between(exchange, _U, _A)
    after_answer = _between(two, _A, _U2)
    if not (between.startswith(user_after) and after_answer.startswith(assistant_after)):
        return None
    user_before = after_answer[len(assistant_after) :]
    head_and_before = one[: one.index(_U)]
    if not head_and_before.endswith(user_before):
        return None
    system_after = _between(with_system, _S, _U)
    if not system_after.endswith(user_before):
        return None
    return RoleWrappers(
        head=head_and_before[: len(head_and_before) - len(user_before)],
        system=(with_system[: with_system.index(_S)], system_after[: -len(user_before) or None]),
        user=(user_before, user_after),
        assistant=(between[len(user_after) :], assistant_after),
        generation=_render(tokenizer, [user], True)[len(one) :],
    )


def _reproduces(wrappers: RoleWrappers, tokenizer) -> bool:
    turns = [
        {"role": "user", "content": "Q one"},
        {"role": "assistant", "content": "A one"},
        {"role": "user", "content": "Q two"},
        {"role": "assistant", "content": "A two"},
        {"role": "user", "content": "Q three"},
    ]
    for messages in (turns, [{"role": "system", "content": "Be brief."}, *turns]):
        for prompt in (False, True):
            if wrappers.render(messages, prompt) != _render(tokenizer, messages, prompt):
                return False
    return True
