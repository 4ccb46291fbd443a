"""The command lines of seed 004's scripts, accepted as they were written.

Teams ran `python judge_conversations.py --evaluation-type elo --filepaths a.db b.db --traits
consistency helpfulness` and `python generate_conversations.py --ideas-file ideas.json ...`.
Those scripts take several values after one flag (argparse's `nargs="+"`), which click does
not, so their flags are rewritten into tunelab's before parsing: a seed user's scripts change
only the program name (`tunelab eval judge`, `tunelab generate-conversations`).
"""

from __future__ import annotations

# The seed's word for each judging mode, in tunelab's terms.
_EVALUATION_TYPES = {"single": "single", "elo": "pairwise", "pairwise": "pairwise"}
# Seed flags that take one value or more, and the repeatable tunelab flag each becomes.
_MANY_VALUES = {"--filepaths": "--conversations", "--traits": "--traits"}
# Seed flags that take one value under another name.
_RENAMED = {"--ideas-file": "--ideas"}


def translate_seed_flags(argv: list[str]) -> list[str]:
    """argv with seed 004's flags of `eval judge` and `generate-conversations` rewritten."""
    if argv[:2] == ["eval", "judge"]:
        return argv[:2] + _rewrite(argv[2:])
    if argv[:1] == ["generate-conversations"]:
        return argv[:1] + _rewrite(argv[1:])
    return argv


def _rewrite(args: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    while index < len(args):
        flag = args[index]
        if flag in _MANY_VALUES:
            values = _values_after(args, index)
            for value in values:
                out += [_MANY_VALUES[flag], value]
            index += 1 + len(values)
            if not values:
                out.append(_MANY_VALUES[flag])  # click then names the missing value
        elif flag == "--evaluation-type" and index + 1 < len(args):
            value = args[index + 1]
            out += ["--mode", _EVALUATION_TYPES.get(value, value)]
            index += 2
        else:
            out.append(_RENAMED.get(flag, flag))
            index += 1
    return out


def _values_after(args: list[str], index: int) -> list[str]:
    """The values that follow a flag, up to the next flag (as argparse's nargs="+")."""
    values = []
    for value in args[index + 1 :]:
        if value.startswith("-") and len(value) > 1:
            break
        values.append(value)
    return values
