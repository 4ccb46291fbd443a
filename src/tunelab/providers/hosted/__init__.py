"""Hosted services as providers: OpenAI, Together AI, Anthropic and any OpenAI-compatible
endpoint, through their official SDKs, and the job handling they share."""
