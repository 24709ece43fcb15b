"""/v1 tasks (list, show, end) and delegation tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tether.api.deps import AdminDep, PrincipalDep, ReaderDep, ServicesDep
from tether.api.problems import COMMON_RESPONSES, PROBLEM_SCHEMA
from tether.api.schemas import Cursor, Id, PageOut, Strict, Text
from tether.api.wiring import Services
from tether.errors import Forbidden, Unavailable
from tether.identity.model import Role
from tether.tokens import TaskRow, TokenService
from tether.types import utcnow

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object", **PROBLEM_SCHEMA}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "Already ended", **PROBLEM_SCHEMA}}
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
After = Annotated[Cursor | None, Query(description="Cursor from the previous page's next_cursor")]


def tokens_of(svc: Services) -> TokenService:
    if svc.tokens is None:
        raise Unavailable("the token service is not available")
    return svc.tokens


class TaskOut(BaseModel):
    id: str
    agent_id: str
    person_id: str
    delegation_id: str | None
    purpose: str
    scopes: list[str]
    audience: str
    actors: list[str]
    constraints: dict[str, Any] | None
    status: Literal["open", "expired", "ended"]
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None

    @classmethod
    def of(cls, t: TaskRow) -> TaskOut:
        return cls(
            id=t.id, agent_id=t.agent_id, person_id=t.person_id, delegation_id=t.delegation_id, purpose=t.purpose,
            scopes=list(t.scopes), audience=t.audience, actors=list(t.actors), constraints=t.constraints,
            status=t.state(utcnow()), started_at=t.started_at, expires_at=t.expires_at,
            ended_at=t.ended_at, end_reason=t.end_reason,
        )  # fmt: skip


class EndIn(Strict):
    reason: Text = "ended by request"


class DelegationTokenIn(Strict):
    days: int | None = Field(None, ge=1, le=30, description="Lifetime in days (≤ 30, ≤ the delegation's end).")


class DelegationTokenOut(BaseModel):
    delegation_token: str
    token_type: str = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 — a type URI, not a secret


@router.get("/tasks", tags=["tasks"])
def list_tasks(
    svc: ServicesDep, who: ReaderDep, limit: Limit = 50, after: After = None,
    agent_id: Id | None = None, person_id: Id | None = None,
    status: Annotated[Literal["open", "expired", "ended"] | None, Query()] = None,
) -> PageOut[TaskOut]:  # fmt: skip
    rows, cursor = tokens_of(svc).list_tasks(
        after=after, limit=limit, agent_id=agent_id, person_id=person_id, status=status
    )
    return PageOut(items=[TaskOut.of(t) for t in rows], next_cursor=cursor)


@router.get("/tasks/{task_id}", responses=NOT_FOUND, tags=["tasks"])
def get_task(task_id: Id, svc: ServicesDep, who: ReaderDep) -> TaskOut:
    return TaskOut.of(tokens_of(svc).get_task(task_id))


@router.post("/tasks/{task_id}/end", responses={**NOT_FOUND, **CONFLICT}, tags=["tasks"])
def end_task(task_id: Id, svc: ServicesDep, who: PrincipalDep, body: EndIn | None = None) -> TaskOut:
    """End the task: every token under it fails at every gateway within a second."""
    tokens = tokens_of(svc)
    task = tokens.get_task(task_id)
    allowed = who.role is Role.ADMIN or who.person_id == task.person_id
    if not allowed and svc.identity.get_agent(task.agent_id).sponsor_id != who.person_id:
        raise Forbidden("only an admin, the task's person or the agent's sponsor may end a task")
    return TaskOut.of(tokens.end_task(who.person_id, task_id, (body or EndIn()).reason))


@router.post("/delegations/{delegation_id}/token", responses={**NOT_FOUND, **CONFLICT}, tags=["delegations"])
def delegation_token(
    delegation_id: Id, svc: ServicesDep, who: AdminDep, body: DelegationTokenIn | None = None
) -> DelegationTokenOut:
    """A delegation token for the agent to exchange (recorded `admin_asserted` when an admin mints it)."""
    days = body.days if body else None
    return DelegationTokenOut(delegation_token=tokens_of(svc).mint_delegation_token(who.person_id, delegation_id,
                                                                                   days=days))  # fmt: skip
