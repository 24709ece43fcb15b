"""Audit events: what a context submits, and the chained record that is stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1
GENESIS_HASH = "0" * 64

#: The contract's fields (architecture §6), in the order they are documented.
CONTRACT_FIELDS = (
    "seq",
    "id",
    "ts",
    "type",
    "task_id",
    "trace_id",
    "parent_id",
    "agent_id",
    "person_id",
    "sponsor_id",
    "action",
    "resource",
    "decision",
    "policy_ids",
    "approval_id",
    "request_digest",
    "prompt_digest",
    "outcome",
    "prev_hash",
    "hash",
    "v",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, as a context reports it. The chain adds seq, id, ts and hashes.

    `actor` names who caused it (a person id, an agent id, or `system`); `detail` holds
    event-specific facts. Every event about an agent's action names both the person and
    the agent, so attribution never collapses.
    """

    type: str
    actor: str = "system"
    task_id: str | None = None
    trace_id: str | None = None
    parent_id: str | None = None
    agent_id: str | None = None
    person_id: str | None = None
    sponsor_id: str | None = None
    action: str | None = None
    resource: dict[str, Any] | None = None
    decision: str | None = None
    policy_ids: tuple[str, ...] = ()
    approval_id: str | None = None
    request_digest: str | None = None
    prompt_digest: str | None = None
    outcome: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: set by the writer when the caller pre-allocates the id (so it can link children to it)
    id: str | None = None
    ts: str | None = None

    def body(self, *, seq: int, event_id: str, ts: str, prev_hash: str) -> dict[str, Any]:
        """The record without `hash`: exactly what is hashed."""
        return {
            "v": RECORD_VERSION,
            "seq": seq,
            "id": event_id,
            "ts": ts,
            "type": self.type,
            "actor": self.actor,
            "task_id": self.task_id,
            "trace_id": self.trace_id,
            "parent_id": self.parent_id,
            "agent_id": self.agent_id,
            "person_id": self.person_id,
            "sponsor_id": self.sponsor_id,
            "action": self.action,
            "resource": self.resource,
            "decision": self.decision,
            "policy_ids": list(self.policy_ids),
            "approval_id": self.approval_id,
            "request_digest": self.request_digest,
            "prompt_digest": self.prompt_digest,
            "outcome": self.outcome,
            "detail": self.detail,
            "prev_hash": prev_hash,
        }


@dataclass(frozen=True, slots=True)
class Record:
    """A stored, chained event. `body` is the canonical JSON that `hash` covers."""

    seq: int
    id: str
    ts: str
    type: str
    body: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        doc["hash"] = self.hash
        return doc


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof that an event is durable: its place in the chain."""

    seq: int
    id: str
    hash: str


__all__ = ["CONTRACT_FIELDS", "GENESIS_HASH", "RECORD_VERSION", "Event", "Receipt", "Record"]
