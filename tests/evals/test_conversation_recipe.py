"""A conversation recipe refuses an answer length or temperature out of range, whichever
front end made it (the studio's form reaches it unchecked)."""

from __future__ import annotations

import pytest

from tunelab.errors import TunelabError
from tunelab.evals.conversations import MAX_TEMPERATURE, ConversationRecipe


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"max_tokens": 0}, "invalid_max_tokens"),
        ({"temperature": -0.1}, "invalid_temperature"),
        ({"temperature": MAX_TEMPERATURE + 0.5}, "invalid_temperature"),
    ],
)
def test_out_of_range_values_are_refused(values, code):
    with pytest.raises(TunelabError) as caught:
        ConversationRecipe("m", **values)
    assert caught.value.code == code
    assert caught.value.exit_code == 2


def test_limits_themselves_are_accepted():
    recipe = ConversationRecipe("m", max_tokens=1, temperature=MAX_TEMPERATURE)
    assert (recipe.max_tokens, recipe.temperature) == (1, MAX_TEMPERATURE)
