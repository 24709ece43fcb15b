"""Decision requests and decisions: values, built by the enforcement points, read by auditors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Purview-like labels, ordered: policies compare `resource.sensitivity` levels (0..3).
SENSITIVITY = {"public": 0, "internal": 1, "confidential": 2, "highly_confidential": 3}


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action touches. `type` is the Cedar entity type (MailMessage, DriveItem, Tool…)."""

    type: str
    id: str
    system: str
    sensitivity: str = "internal"
    owner: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One request for a decision. Identity fields come from a verified task token only."""

    agent_id: str
    person_id: str
    actors: tuple[str, ...]
    task_id: str
    scopes: frozenset[str]
    action: str
    resource: Resource
    facts: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, int] = field(default_factory=dict)
    constraints: Mapping[str, Any] | None = None

    @classmethod
    def from_input(cls, doc: Mapping[str, Any]) -> DecisionRequest:
        """Rebuild a request from `decision_input(req)` (what replay reads from the audit)."""
        return request_from_input(doc)


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    effect: Effect
    #: @id of the deciding policies: the permits for allow; the blocking forbids otherwise
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    #: satisfied forbids still in force (what an approval must lift)
    forbid_ids: tuple[str, ...]
    approver: str | None
    bundle: str
    lifted: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW


def decision_input(req: DecisionRequest) -> dict[str, Any]:
    """The full decision input as JSON, kept so `tether policy replay` can decide it again."""
    r = req.resource
    return {
        "agent_id": req.agent_id,
        "person_id": req.person_id,
        "actors": list(req.actors),
        "task_id": req.task_id,
        "scopes": sorted(req.scopes),
        "action": req.action,
        "resource": {
            "type": r.type,
            "id": r.id,
            "system": r.system,
            "sensitivity": r.sensitivity,
            "owner": r.owner,
            "attrs": dict(r.attrs),
        },
        "facts": dict(req.facts),
        "usage": dict(req.usage),
        "constraints": dict(req.constraints) if req.constraints is not None else None,
    }


def request_from_input(doc: Mapping[str, Any]) -> DecisionRequest:
    r = doc["resource"]
    return DecisionRequest(
        agent_id=doc["agent_id"],
        person_id=doc["person_id"],
        actors=tuple(doc.get("actors", ())),
        task_id=doc.get("task_id", ""),
        scopes=frozenset(doc.get("scopes", ())),
        action=doc["action"],
        resource=Resource(
            type=r["type"],
            id=r["id"],
            system=r["system"],
            sensitivity=r.get("sensitivity", "internal"),
            owner=r.get("owner"),
            attrs=r.get("attrs") or {},
        ),
        facts=doc.get("facts") or {},
        usage=doc.get("usage") or {},
        constraints=doc.get("constraints"),
    )


__all__ = ["SENSITIVITY", "Decision", "DecisionRequest", "Effect", "Resource", "decision_input", "request_from_input"]
