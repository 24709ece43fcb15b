"""Approval requests and break-glass grants: frozen values; the service enforces the rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    USED = "used"
    EXPIRED = "expired"


#: the approver rules a policy's `@approver` may name (besides `group:<name>`)
APPROVER_RULES = ("sponsor", "person", "not-self")


@dataclass(frozen=True, slots=True)
class Approval:
    """One request held for a human: everything the decider needs to see, bound to one digest."""

    id: str
    status: ApprovalStatus
    agent_id: str
    person_id: str
    sponsor_id: str
    actors: tuple[str, ...]
    task_id: str
    action: str
    resource: dict[str, Any]
    summary: dict[str, Any]
    prompt: str | None
    gateway: str
    decision_id: str
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    forbid_ids: tuple[str, ...]
    approver_rule: str
    bundle: str
    request_digest: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    used_at: datetime | None = None

    def status_at(self, now: datetime) -> ApprovalStatus:
        """The status as of `now`: a pending or approved request past its expiry is expired."""
        if self.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) and now >= self.expires_at:
            return ApprovalStatus.EXPIRED
        return self.status


class ReviewStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Breakglass:
    """A time-boxed emergency override for one agent (all its tasks) or one task."""

    id: str
    invoked_by: str
    agent_id: str
    task_id: str | None
    justification: str
    created_at: datetime
    expires_at: datetime
    review_status: ReviewStatus
    ended_at: datetime | None = None
    ended_by: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = None

    def active_at(self, now: datetime) -> bool:
        return self.ended_at is None and self.created_at <= now < self.expires_at

    def covers(self, agent_id: str, task_id: str) -> bool:
        return self.agent_id == agent_id and (self.task_id is None or self.task_id == task_id)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook notification and what became of it."""

    id: str
    event: str
    subject_id: str
    url: str
    format: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


__all__ = ["APPROVER_RULES", "Approval", "ApprovalStatus", "Breakglass", "Delivery", "ReviewStatus"]
