"""Cluster-selection policies. A policy has ``choose`` and ``update`` only; the loop owns budget and I/O."""

from .ucb import UCB, Policy

__all__ = ["UCB", "Policy"]
