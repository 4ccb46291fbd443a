"""Providers: where jobs run and models answer (local, together, openai)."""
