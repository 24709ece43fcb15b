"""Identifiers and small value helpers shared by every context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NewType

from tether.entropy import random_bytes

PersonId = NewType("PersonId", str)
AgentId = NewType("AgentId", str)
DelegationId = NewType("DelegationId", str)
TaskId = NewType("TaskId", str)
EventId = NewType("EventId", str)
DecisionId = NewType("DecisionId", str)
ApprovalId = NewType("ApprovalId", str)

#: id prefixes, so an id says what it names (`agt_…` is an agent).
PREFIXES = {
    "person": "per",
    "agent": "agt",
    "delegation": "dlg",
    "task": "tsk",
    "event": "evt",
    "decision": "dec",
    "approval": "apr",
    "token": "tok",
    "breakglass": "brk",
}


ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_PAIRS = [a + b for a in ID_ALPHABET for b in ID_ALPHABET]  # 10 bits → 2 characters


def new_id(prefix: str) -> str:
    """A fresh random id: `<prefix>_` + 26 base32 characters (130 bits from the OS's CSPRNG)."""
    n = int.from_bytes(random_bytes(17), "big")
    p = ID_PAIRS
    return prefix + "_" + "".join([p[(n >> s) & 1023] for s in range(0, 130, 10)])


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds, as the audit contract fixes it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = [
    "PREFIXES",
    "AgentId",
    "ApprovalId",
    "DecisionId",
    "DelegationId",
    "EventId",
    "PersonId",
    "TaskId",
    "new_id",
    "rfc3339",
    "utcnow",
]
