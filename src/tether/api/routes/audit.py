"""/v1/audit: query the chain, verify it, its checkpoints, and the erasable content of events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel

from tether.api.auth import Principal
from tether.api.deps import ServicesDep, role
from tether.api.problems import COMMON_RESPONSES
from tether.api.wiring import Services
from tether.audit import checkpoints as cps
from tether.audit import query as q
from tether.audit.verify import VerifyResult, verify
from tether.errors import Unavailable
from tether.identity.model import Role

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=COMMON_RESPONSES)
AuditorDep = Annotated[Principal, Depends(role(Role.AUDITOR))]
IdQ = Annotated[str | None, Query(max_length=40, pattern=r"^[a-z]{3}_[0-9a-z]+$")]


class AuditPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: int | None


class VerifyOut(BaseModel):
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    first_bad_seq: int | None
    kind: str | None
    detail: str | None
    seconds: float


class CheckpointsOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: int | None
    public_key: dict[str, str] | None


def run_verify(svc: Services) -> VerifyResult:
    file = svc.extras.get("checkpoint_file")
    return verify(
        svc.db, svc.extras.get("audit_key"), checkpoint_file=Path(file) if file else None,
        key_error=svc.extras.get("audit_key_error"),
    )  # fmt: skip


@router.get("", summary="Audit records, filtered, in chain order (paginated by seq)")
def list_events(
    svc: ServicesDep, _p: AuditorDep, task_id: IdQ = None, agent_id: IdQ = None, person_id: IdQ = None,
    type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.<>-]+$")] = None,
    since: Annotated[str | None, Query(max_length=40, description="RFC 3339 date-time")] = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="next_cursor of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:  # fmt: skip
    items, nxt = q.query(
        svc.db, task_id=task_id, agent_id=agent_id, person_id=person_id, type=type, since=since, after=after,
        limit=limit,
    )  # fmt: skip
    return AuditPage(items=items, next_cursor=nxt)


@router.get("/verify", summary="Verify the whole chain and every checkpoint")
async def verify_chain(svc: ServicesDep, _p: AuditorDep) -> VerifyOut:
    return VerifyOut(**(await asyncio.to_thread(run_verify, svc)).as_dict())


@router.get("/checkpoints", summary="Signed checkpoints (JWS, EdDSA) and the audit public key")
def list_checkpoints(
    svc: ServicesDep, _p: AuditorDep, after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointsOut:  # fmt: skip
    rows = cps.list_checkpoints(svc.db, after=after, limit=limit)
    key = svc.extras.get("audit_key")
    return CheckpointsOut(
        items=[c.as_dict() for c in rows], next_cursor=rows[-1].seq if len(rows) == limit else None,
        public_key=key.jwk() if key is not None else None,
    )  # fmt: skip


@router.get("/{event_id}/content", summary="The erasable content of an event (prompt, arguments, decision input)")
def event_content(
    svc: ServicesDep, _p: AuditorDep, event_id: Annotated[str, PathParam(max_length=40, pattern=r"^evt_[0-9a-z]+$")]
) -> dict[str, Any]:
    key = svc.extras.get("audit_content_key")
    if key is None:
        raise Unavailable("the audit content store is not available")
    content = q.read_content(svc.db, key, event_id)
    return {"event_id": event_id, "erased": content is None, "content": content}
