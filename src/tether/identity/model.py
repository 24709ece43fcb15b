"""Persons, agents and delegations: frozen values; the service enforces the rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from tether.types import AgentId, DelegationId, PersonId


class PersonStatus(StrEnum):
    ACTIVE = "active"
    DEPROVISIONED = "deprovisioned"


class AgentMode(StrEnum):
    ADVISORY = "advisory"
    EXECUTING = "executing"


class AgentStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"


class DelegationStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class Role(StrEnum):
    ADMIN = "admin"
    APPROVER = "approver"
    AUDITOR = "auditor"
    BREAKGLASS = "breakglass"


@dataclass(frozen=True, slots=True)
class Person:
    id: PersonId
    issuer: str
    subject: str
    email: str
    name: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    #: direct grants; `IdentityService.entitlements()` adds the group mapping
    entitlements: tuple[str, ...]
    status: PersonStatus
    created_at: datetime
    updated_at: datetime
    deprovisioned_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is PersonStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Agent:
    id: AgentId
    name: str
    sponsor_id: PersonId
    owner_team: str
    scope_approver_id: PersonId | None
    purpose: str
    mode: AgentMode
    ceiling: tuple[str, ...]
    jwks: dict[str, Any]
    status: AgentStatus
    review_due: date
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is AgentStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class Delegation:
    id: DelegationId
    person_id: PersonId
    agent_id: AgentId
    actions: tuple[str, ...]
    status: DelegationStatus
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    admin_asserted: bool = False

    def live(self, now: datetime) -> bool:
        return self.status is DelegationStatus.ACTIVE and now < self.expires_at


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None


__all__ = [
    "Agent",
    "AgentMode",
    "AgentStatus",
    "Delegation",
    "DelegationStatus",
    "Page",
    "Person",
    "PersonStatus",
    "Role",
]
