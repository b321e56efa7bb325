"""Test servers: an OpenAI-protocol server with injectable faults (and its pytest fixtures)."""
