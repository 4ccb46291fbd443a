"""The engine refuses to train into the directory its model was loaded from (or one above
it): starting over there would delete the model. `tunelab train` gets the same rule from
`check_output_dir(inputs=...)` before anything loads (test_cli_train_chat.py)."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from tiny import save_tiny_model
from tunelab.engine import train
from tunelab.engine.checkpoint import check_output_dir
from tunelab.errors import TunelabError


@pytest.mark.parametrize("where", ["itself", "its parent"])
def test_training_into_the_models_own_directory_is_refused(
    tmp_path, tokenizer, examples, fast_config, where
):
    source = save_tiny_model(tmp_path / "models" / "base")
    before = sorted(p.name for p in source.iterdir())
    model = AutoModelForCausalLM.from_pretrained(source)
    output = source if where == "itself" else source.parent
    with pytest.raises(TunelabError) as raised:
        train(model, tokenizer, examples, None, fast_config(), output, force=True)
    assert raised.value.code == "output_is_input" and str(source) in raised.value.message
    assert sorted(p.name for p in source.iterdir()) == before


def test_check_output_dir_compares_resolved_paths(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    with pytest.raises(TunelabError, match="would overwrite"):
        check_output_dir(tmp_path / "x" / "..", resume=False, force=True, inputs=(model_dir,))
    check_output_dir(tmp_path / "run", resume=False, force=False, inputs=(model_dir, None))
