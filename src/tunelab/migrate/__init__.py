"""Leaving OpenAI fine-tuning: every fine-tune moved to a model you own before the shutdown.

`inventory` records the account's jobs, files and models in the registry; `plan` picks a
target for each fine-tuned model with its analysis; `run` creates the equivalent jobs
through the job registry; `distil` has the old model answer the prompts while it still
can; `compare` evaluates the old model against the new one. Every step reads and writes
the registry, so those that do not need OpenAI keep working after it closes (`dates`).
"""
