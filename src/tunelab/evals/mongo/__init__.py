"""NL→MongoDB evaluation: `tunelab eval queries` (`task.py`) and what it scores with.

`syntax.py` (the parsed-query data model and its JavaScript-ish reader), `parser.py`
(`parse_query`: mongosh or JSON, out of a model's prose), `normalize.py` (`exact_match`),
`structure.py` (partial credit), `executor.py` (an embedded executor over in-memory
documents, with `filters.py`, `expressions.py`, `stages.py` and `values.py`) and `live.py`
(the same queries on a real MongoDB).
"""
