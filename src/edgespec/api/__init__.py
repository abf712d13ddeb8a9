"""The edge's OpenAI-compatible HTTP API."""
