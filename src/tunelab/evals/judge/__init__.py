"""An LLM judge: `tunelab eval judge` (`task.py`) and what it judges with.

`verdicts.py` (delimited judge prompts, strict verdicts, position-swapped pairs) and
`ratings.py` (Bradley–Terry ratings on the Elo scale with bootstrap intervals).
"""
