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
_SHIFTS = range(120, -10, -10)


def encode_id(n: int) -> str:
    """The 130-bit number `n` as 26 characters of ID_ALPHABET, most significant first (so ids sort as `n`).

    Ten bits at a time through a table of pairs: on Python 3.11 `base64.b32encode` is pure Python and
    slower."""
    p = ID_PAIRS
    return "".join([p[(n >> s) & 1023] for s in _SHIFTS])


_ID_VALUES = {c: i for i, c in enumerate(ID_ALPHABET)}


def decode_id(text: str) -> int | None:
    """The number `encode_id` wrote as `text` (26 characters of ID_ALPHABET), or None if it is no such text."""
    if len(text) != 26:
        return None
    n = 0
    values = _ID_VALUES
    for c in text:
        v = values.get(c)
        if v is None:
            return None
        n = n << 5 | v
    return n


def new_id(prefix: str) -> str:
    """A fresh random id: `<prefix>_` + 26 base32 characters (130 bits from the OS's CSPRNG)."""
    return prefix + "_" + encode_id(int.from_bytes(random_bytes(17), "big") >> 6)


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds, as the audit contract fixes it (`…T12:00:00.000000Z`)."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


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
