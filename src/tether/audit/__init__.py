"""The tamper-evident audit chain (architecture §6)."""

from tether.audit.model import Event, Receipt, Record

__all__ = ["Event", "Receipt", "Record"]
