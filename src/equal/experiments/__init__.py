"""Experiments on a user's own corpus: an extraction table (``equal extract-all``) and replays of every
selection strategy against it (``equal compare``), with no LLM call."""
