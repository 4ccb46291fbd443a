"""Recorded answers standing in for a model that can no longer be asked (`answering_from`)."""

from __future__ import annotations

import threading

import pytest

from tunelab.errors import TunelabError
from tunelab.evals.candidates import (
    Answer,
    RecordedCandidate,
    answer_all,
    answering_from,
    open_candidate,
)

GONE = "ft:gpt-4o-mini-2024-07-18:acme:gone:ZZZ"


def key(messages: list[dict]) -> str:
    return messages[-1]["content"]


def test_recorded_answers_stand_in_only_inside_the_context():
    recorded = RecordedCandidate(GONE, {"Refund please": Answer("billing")}, key)
    asked = [[{"role": "user", "content": "Refund please"}], [{"role": "user", "content": "?"}]]
    go, seen_elsewhere = threading.Event(), []
    other = threading.Thread(target=lambda: go.wait() and seen_elsewhere.append(_resolves(GONE)))
    other.start()  # a thread already running (a server's) is not inside the context
    with answering_from({GONE: recorded}):
        answers, _ = answer_all(GONE, asked, max_tokens=8)
        go.set()
        other.join()
    assert answers[0].text == "billing" and answers[0].error is None
    assert answers[1].error == "no recorded answer to this prompt"  # an invalid item, as a failure
    assert seen_elsewhere == [False]  # another thread still asks the model itself
    with pytest.raises(TunelabError):
        open_candidate(GONE)  # outside, the name means the model again (unknown here)


def _resolves(name: str) -> bool:
    try:
        open_candidate(name)
    except TunelabError:
        return False
    return True
