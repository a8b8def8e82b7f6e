"""Serving: an OpenAI-compatible HTTP API and a chat page over the inference engine."""
