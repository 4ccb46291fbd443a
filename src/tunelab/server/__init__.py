"""tunelab serve: the OpenAI-compatible HTTP API under /v1 and the studio at /."""
