"""Pydantic models at the API edge: strict (unknown fields refused), bounded, documented."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tether.identity.model import Agent, Delegation, Person

#: printable text without control characters (NUL would break PostgreSQL text columns)
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
LongText = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+$")
]
Email = Annotated[
    str,
    StringConstraints(
        min_length=3, max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
    ),
]
Id = Annotated[str, StringConstraints(min_length=3, max_length=40, pattern=r"^[a-z]{3}_[0-9a-z]+$")]
ActionName = Annotated[
    str, StringConstraints(min_length=3, max_length=80, pattern=r"^[a-z][a-z0-9_-]*:([a-z][a-z0-9_-]*|\*)$")
]
Cursor = Annotated[str, StringConstraints(max_length=40, pattern=r"^[a-z]{3}_[0-9a-z]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class PersonIn(Strict):
    email: Email
    name: Text
    issuer: Text = "tether"
    subject: Text | None = None
    groups: list[Text] = Field(default_factory=list, max_length=100)
    roles: list[Literal["admin", "approver", "auditor", "breakglass"]] = Field(default_factory=list, max_length=4)
    entitlements: list[ActionName] = Field(default_factory=list, max_length=200)


class PersonPatch(Strict):
    name: Text | None = None
    groups: list[Text] | None = Field(None, max_length=100)
    roles: list[Literal["admin", "approver", "auditor", "breakglass"]] | None = Field(None, max_length=4)
    entitlements: list[ActionName] | None = Field(None, max_length=200)


class PersonOut(BaseModel):
    id: str
    email: str
    name: str
    issuer: str
    subject: str
    groups: list[str]
    roles: list[str]
    entitlements: list[str]
    effective_entitlements: list[str]
    status: Literal["active", "deprovisioned"]
    created_at: datetime
    updated_at: datetime
    deprovisioned_at: datetime | None

    @classmethod
    def of(cls, p: Person, effective: frozenset[str]) -> PersonOut:
        return cls(
            id=p.id,
            email=p.email,
            name=p.name,
            issuer=p.issuer,
            subject=p.subject,
            groups=list(p.groups),
            roles=list(p.roles),
            entitlements=list(p.entitlements),
            effective_entitlements=sorted(effective),
            status=p.status.value,
            created_at=p.created_at,
            updated_at=p.updated_at,
            deprovisioned_at=p.deprovisioned_at,
        )


class JwkIn(Strict):
    model_config = ConfigDict(extra="allow")
    kty: Annotated[str, StringConstraints(max_length=8)]
    crv: Annotated[str, StringConstraints(max_length=16)] | None = None
    x: Annotated[str, StringConstraints(max_length=200)] | None = None
    y: Annotated[str, StringConstraints(max_length=200)] | None = None
    kid: Annotated[str, StringConstraints(max_length=128)] | None = None
    alg: Annotated[str, StringConstraints(max_length=16)] | None = None


class JwksIn(Strict):
    keys: list[JwkIn] = Field(max_length=10)


class AgentIn(Strict):
    name: Text
    sponsor_id: Id
    owner_team: Text
    purpose: LongText
    mode: Literal["advisory", "executing"] = "executing"
    ceiling: list[ActionName] = Field(default_factory=list, max_length=200)
    scope_approver_id: Id | None = None
    jwks: JwksIn | None = None
    review_due: date | None = None


class CeilingIn(Strict):
    ceiling: list[ActionName] = Field(max_length=200)


class ReasonIn(Strict):
    reason: LongText | None = None


class AgentOut(BaseModel):
    id: str
    name: str
    sponsor_id: str
    owner_team: str
    scope_approver_id: str | None
    purpose: str
    mode: Literal["advisory", "executing"]
    ceiling: list[str]
    jwks: dict[str, Any]
    status: Literal["pending", "active", "suspended", "retired"]
    review_due: date
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, a: Agent) -> AgentOut:
        return cls(
            id=a.id,
            name=a.name,
            sponsor_id=a.sponsor_id,
            owner_team=a.owner_team,
            scope_approver_id=a.scope_approver_id,
            purpose=a.purpose,
            mode=a.mode.value,
            ceiling=list(a.ceiling),
            jwks=a.jwks,
            status=a.status.value,
            review_due=a.review_due,
            created_at=a.created_at,
            updated_at=a.updated_at,
            last_used_at=a.last_used_at,
        )


class DelegationIn(Strict):
    person_id: Id
    agent_id: Id
    actions: list[ActionName] = Field(min_length=1, max_length=200)
    expires_at: datetime | None = None


class DelegationOut(BaseModel):
    id: str
    person_id: str
    agent_id: str
    actions: list[str]
    status: Literal["active", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    admin_asserted: bool

    @classmethod
    def of(cls, d: Delegation) -> DelegationOut:
        return cls(
            id=d.id,
            person_id=d.person_id,
            agent_id=d.agent_id,
            actions=list(d.actions),
            status=d.status.value,
            created_at=d.created_at,
            expires_at=d.expires_at,
            ended_at=d.ended_at,
            admin_asserted=d.admin_asserted,
        )


class GroupIn(Strict):
    entitlements: list[ActionName] = Field(max_length=200)


class GroupOut(BaseModel):
    group: str
    entitlements: list[str]
    version: int


class AdminTokenIn(Strict):
    person_id: Id
    role: Literal["admin", "approver", "auditor", "breakglass"]
    label: Text | None = None


class AdminTokenOut(BaseModel):
    token: str
    person_id: str
    role: str


T = TypeVar("T")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `after` to get the next page; null at the end.")


__all__ = [
    "ActionName",
    "AdminTokenIn",
    "AdminTokenOut",
    "AgentIn",
    "AgentOut",
    "CeilingIn",
    "Cursor",
    "DelegationIn",
    "DelegationOut",
    "Email",
    "GroupIn",
    "GroupOut",
    "Id",
    "JwkIn",
    "JwksIn",
    "LongText",
    "PageOut",
    "PersonIn",
    "PersonOut",
    "PersonPatch",
    "ReasonIn",
    "Strict",
    "Text",
]
