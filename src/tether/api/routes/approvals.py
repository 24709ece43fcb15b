"""/v1 approvals and break-glass: every decision names the Person behind the admin token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, Field

from tether.api.auth import Principal
from tether.api.deps import ReaderDep, ServicesDep, role
from tether.api.problems import COMMON_RESPONSES, PROBLEM_SCHEMA
from tether.api.schemas import Cursor, Id, LongText, PageOut, Strict
from tether.api.wiring import Services
from tether.approvals import Approval, ApprovalService, Breakglass, Delivery
from tether.errors import Unavailable
from tether.identity.model import Role

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object", **PROBLEM_SCHEMA}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "Decided already or expired", **PROBLEM_SCHEMA}}

ApproverDep = Annotated[Principal, Depends(role(Role.APPROVER))]
BreakglassDep = Annotated[Principal, Depends(role(Role.BREAKGLASS))]
ReviewerDep = Annotated[Principal, Depends(role(Role.AUDITOR, Role.BREAKGLASS, Role.APPROVER))]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
After = Annotated[Cursor | None, Query(description="Cursor from the previous page's next_cursor")]
StatusQ = Annotated[
    Literal["pending", "approved", "denied", "used", "expired"] | None, Query(description="Only this status")
]


def approvals_of(svc: Services) -> ApprovalService:
    if svc.approvals is None:
        raise Unavailable("approvals are not available")
    return svc.approvals


class DecideIn(Strict):
    reason: LongText = Field(description="Why: recorded in the audit log with the decider's person id.")


class BreakglassIn(Strict):
    agent_id: Id
    task_id: Id | None = Field(None, description="Limit the override to one task (default: every task of the agent).")
    justification: LongText
    duration: int = Field(900, ge=1, le=3600, description="Seconds; at most the configured maximum (≤ 1 h).")


class ReviewIn(Strict):
    note: LongText


class DeliveryOut(BaseModel):
    id: str
    event: str
    url: str
    format: str
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(**{k: getattr(d, k) for k in cls.model_fields})


class ApprovalOut(BaseModel):
    id: str
    status: Literal["pending", "approved", "denied", "used", "expired"]
    agent_id: str
    person_id: str
    sponsor_id: str
    actors: list[str]
    task_id: str
    action: str
    resource: dict[str, Any]
    arguments: dict[str, Any] = Field(description="The call's arguments, secrets redacted by the gateway.")
    prompt: str | None
    gateway: str
    decision_id: str
    policy_ids: list[str]
    reasons: list[str]
    forbid_ids: list[str]
    approver: str
    request_digest: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    used_at: datetime | None
    deliveries: list[DeliveryOut] | None = None

    @classmethod
    def of(cls, a: Approval, now: datetime, deliveries: list[Delivery] | None = None) -> ApprovalOut:
        return cls(
            id=a.id, status=a.status_at(now).value, agent_id=a.agent_id, person_id=a.person_id,
            sponsor_id=a.sponsor_id, actors=list(a.actors), task_id=a.task_id, action=a.action,
            resource=a.resource, arguments=a.summary, prompt=a.prompt, gateway=a.gateway,
            decision_id=a.decision_id, policy_ids=list(a.policy_ids), reasons=list(a.reasons),
            forbid_ids=list(a.forbid_ids), approver=a.approver_rule, request_digest=a.request_digest,
            created_at=a.created_at, expires_at=a.expires_at, decided_at=a.decided_at, decided_by=a.decided_by,
            decision_reason=a.decision_reason, used_at=a.used_at,
            deliveries=[DeliveryOut.of(d) for d in deliveries] if deliveries is not None else None,
        )  # fmt: skip


class BreakglassOut(BaseModel):
    id: str
    invoked_by: str
    agent_id: str
    task_id: str | None
    justification: str
    created_at: datetime
    expires_at: datetime
    active: bool
    ended_at: datetime | None
    ended_by: str | None
    review_status: Literal["open", "closed"]
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None

    @classmethod
    def of(cls, bg: Breakglass, now: datetime) -> BreakglassOut:
        fields = {k: getattr(bg, k) for k in cls.model_fields if k not in ("active", "review_status")}
        return cls(**fields, active=bg.active_at(now), review_status=bg.review_status.value)


# ------------------------------------------------------------------ approvals


@router.get("/approvals", tags=["approvals"])
def list_approvals(
    svc: ServicesDep, who: ReaderDep, limit: Limit = 50, after: After = None, status: StatusQ = None
) -> PageOut[ApprovalOut]:
    """Approval requests, newest first (`status=pending` for the queue)."""
    a = approvals_of(svc)
    page = a.list_approvals(status=status, after=after, limit=limit)
    now = a.clock()
    return PageOut(items=[ApprovalOut.of(x, now) for x in page.items], next_cursor=page.next_cursor)


@router.get("/approvals/{approval_id}", responses=NOT_FOUND, tags=["approvals"])
def get_approval(approval_id: Id, svc: ServicesDep, who: ReaderDep) -> ApprovalOut:
    """One request with its full context and the record of its webhook deliveries."""
    a = approvals_of(svc)
    return ApprovalOut.of(a.get(approval_id), a.clock(), a.deliveries(approval_id))


@router.post("/approvals/{approval_id}/approve", responses={**NOT_FOUND, **CONFLICT}, tags=["approvals"])
async def approve(approval_id: Id, body: DecideIn, svc: ServicesDep, who: ApproverDep) -> ApprovalOut:
    """Approve once: the exact request (same task, same digest) may run one time before expiry."""
    a = approvals_of(svc)
    return ApprovalOut.of(await a.decide(who.person_id, approval_id, approve=True, reason=body.reason), a.clock())


@router.post("/approvals/{approval_id}/deny", responses={**NOT_FOUND, **CONFLICT}, tags=["approvals"])
async def deny(approval_id: Id, body: DecideIn, svc: ServicesDep, who: ApproverDep) -> ApprovalOut:
    """Deny the request; the agent's retry stays refused."""
    a = approvals_of(svc)
    return ApprovalOut.of(await a.decide(who.person_id, approval_id, approve=False, reason=body.reason), a.clock())


# ------------------------------------------------------------------ break-glass


@router.post("/breakglass", status_code=status.HTTP_201_CREATED, tags=["breakglass"])
async def start_breakglass(body: BreakglassIn, svc: ServicesDep, who: BreakglassDep) -> BreakglassOut:
    """Emergency override for one agent or task: lifts every forbid not marked @breakglass("never")."""
    a = approvals_of(svc)
    bg = await a.start_breakglass(
        who.person_id, agent_id=body.agent_id, task_id=body.task_id, justification=body.justification,
        duration=body.duration,
    )  # fmt: skip
    return BreakglassOut.of(bg, a.clock())


@router.get("/breakglass", tags=["breakglass"])
def list_breakglass(
    svc: ServicesDep, who: ReviewerDep,
    review: Annotated[Literal["open", "closed"] | None, Query(description="Only open or closed reviews")] = None,
) -> PageOut[BreakglassOut]:  # fmt: skip
    a = approvals_of(svc)
    items = a.list_breakglass(open_review=None if review is None else review == "open")
    now = a.clock()
    return PageOut(items=[BreakglassOut.of(bg, now) for bg in items], next_cursor=None)


@router.post("/breakglass/{breakglass_id}/review", responses={**NOT_FOUND, **CONFLICT}, tags=["breakglass"])
async def review_breakglass(breakglass_id: Id, body: ReviewIn, svc: ServicesDep, who: ReviewerDep) -> BreakglassOut:
    """Close the review: only a second person (never the one who invoked it)."""
    a = approvals_of(svc)
    return BreakglassOut.of(await a.review_breakglass(who.person_id, breakglass_id, note=body.note), a.clock())


@router.post("/breakglass/{breakglass_id}/end", responses={**NOT_FOUND, **CONFLICT}, tags=["breakglass"])
async def end_breakglass(breakglass_id: Id, svc: ServicesDep, who: BreakglassDep) -> BreakglassOut:
    """End an override before its expiry."""
    a = approvals_of(svc)
    return BreakglassOut.of(await a.end_breakglass(who.person_id, breakglass_id), a.clock())


__all__ = ["ApprovalOut", "BreakglassOut", "router"]
