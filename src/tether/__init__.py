"""Tether: identity, task-scoped tokens, runtime policy and a tamper-evident audit chain for AI assistants."""

__version__ = "0.1.0"
__all__ = ["__version__"]
