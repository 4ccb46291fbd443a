"""Evaluation: score any model's answers (classification, NL→MongoDB queries, an LLM judge)."""
