"""/v1 persons, agents, delegations, group mappings and admin tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from tether.api.deps import AdminDep, ReaderDep, ServicesDep
from tether.api.problems import COMMON_RESPONSES, PROBLEM_SCHEMA
from tether.api.schemas import (
    AdminTokenIn,
    AdminTokenOut,
    AgentIn,
    AgentOut,
    CeilingIn,
    Cursor,
    DelegationIn,
    DelegationOut,
    GroupIn,
    GroupOut,
    Id,
    JwkIn,
    PageOut,
    PersonIn,
    PersonOut,
    PersonPatch,
    ReasonIn,
    Text,
)

router = APIRouter(prefix="/v1", responses=COMMON_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object", **PROBLEM_SCHEMA}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "Duplicate, or not allowed in this state", **PROBLEM_SCHEMA}
}

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
After = Annotated[Cursor | None, Query(description="Cursor from the previous page's next_cursor")]


def _person_out(svc: ServicesDep, person_id: str) -> PersonOut:
    p = svc.identity.get_person(person_id)
    return PersonOut.of(p, svc.identity.entitlements(p))


# ------------------------------------------------------------------ persons


@router.post("/persons", status_code=status.HTTP_201_CREATED, responses=CONFLICT, tags=["persons"])
def create_person(body: PersonIn, svc: ServicesDep, who: AdminDep) -> PersonOut:
    """Register a person (normally pushed by the IdP; matched by issuer + subject, never email alone)."""
    p = svc.identity.create_person(who.person_id, **body.model_dump())
    return PersonOut.of(p, svc.identity.entitlements(p))


@router.get("/persons", tags=["persons"])
def list_persons(
    svc: ServicesDep,
    who: ReaderDep,
    limit: Limit = 50,
    after: After = None,
    status: Annotated[str | None, Query(pattern="^(active|deprovisioned)$")] = None,
) -> PageOut[PersonOut]:
    page = svc.identity.list_persons(after=after, limit=limit, status=status)
    return PageOut(
        items=[PersonOut.of(p, svc.identity.entitlements(p)) for p in page.items], next_cursor=page.next_cursor
    )


@router.get("/persons/{person_id}", responses=NOT_FOUND, tags=["persons"])
def get_person(person_id: Id, svc: ServicesDep, who: ReaderDep) -> PersonOut:
    return _person_out(svc, person_id)


@router.patch("/persons/{person_id}", responses={**NOT_FOUND, **CONFLICT}, tags=["persons"])
def update_person(person_id: Id, body: PersonPatch, svc: ServicesDep, who: AdminDep) -> PersonOut:
    """Change a person; narrowing entitlements ends the tasks that exceed them."""
    svc.identity.update_person(who.person_id, person_id, **body.model_dump(exclude_none=True))
    svc.admin_tokens.forget(person_id)
    return _person_out(svc, person_id)


@router.post("/persons/{person_id}/deprovision", responses={**NOT_FOUND, **CONFLICT}, tags=["persons"])
def deprovision_person(person_id: Id, svc: ServicesDep, who: AdminDep) -> PersonOut:
    """The person leaves: their agents are suspended, their delegations and open tasks end."""
    svc.identity.deprovision_person(who.person_id, person_id)
    svc.admin_tokens.revoke_for_person(person_id)
    return _person_out(svc, person_id)


@router.put("/groups/{group}", tags=["persons"])
def map_group(group: Text, body: GroupIn, svc: ServicesDep, who: AdminDep) -> GroupOut:
    """Map an IdP group to actions; members' effective entitlements follow (versioned)."""
    version = svc.identity.set_group_entitlements(who.person_id, group, body.entitlements)
    return GroupOut(group=group, entitlements=sorted(set(body.entitlements)), version=version)


@router.post("/admin-tokens", status_code=status.HTTP_201_CREATED, tags=["persons"])
def issue_admin_token(body: AdminTokenIn, svc: ServicesDep, who: AdminDep) -> AdminTokenOut:
    """Issue an admin-API token bound to a person and one role. Shown once; only its hash is kept."""
    token = svc.admin_tokens.issue(body.person_id, body.role, body.label or "")
    return AdminTokenOut(token=token, person_id=body.person_id, role=body.role)


# ------------------------------------------------------------------- agents


@router.post("/agents", status_code=status.HTTP_201_CREATED, tags=["agents"])
def create_agent(body: AgentIn, svc: ServicesDep, who: AdminDep) -> AgentOut:
    """Register an agent under an active sponsor; its ceiling may not exceed the sponsor's entitlements."""
    data = body.model_dump(exclude={"jwks"})
    jwks = body.jwks.model_dump(exclude_none=True) if body.jwks is not None else None
    return AgentOut.of(svc.identity.create_agent(who.person_id, jwks=jwks, **data))


@router.get("/agents", tags=["agents"])
def list_agents(
    svc: ServicesDep,
    who: ReaderDep,
    limit: Limit = 50,
    after: After = None,
    sponsor_id: Id | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|active|suspended|retired)$")] = None,
) -> PageOut[AgentOut]:
    page = svc.identity.list_agents(after=after, limit=limit, sponsor_id=sponsor_id, status=status)
    return PageOut(items=[AgentOut.of(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/agents/{agent_id}", responses=NOT_FOUND, tags=["agents"])
def get_agent(agent_id: Id, svc: ServicesDep, who: ReaderDep) -> AgentOut:
    return AgentOut.of(svc.identity.get_agent(agent_id))


@router.post("/agents/{agent_id}/approve", responses={**NOT_FOUND, **CONFLICT}, tags=["agents"])
def approve_agent(agent_id: Id, svc: ServicesDep, who: ReaderDep) -> AgentOut:
    """The agent's scope approver (or an admin) accepts its scope: pending → active."""
    from tether.identity.model import Role

    return AgentOut.of(svc.identity.approve_agent(who.person_id, agent_id, actor_is_admin=who.role is Role.ADMIN))


@router.post("/agents/{agent_id}/suspend", responses={**NOT_FOUND, **CONFLICT}, tags=["agents"])
def suspend_agent(agent_id: Id, svc: ServicesDep, who: AdminDep, body: ReasonIn | None = None) -> AgentOut:
    """Suspend: every token of the agent fails at once and its open tasks end."""
    return AgentOut.of(svc.identity.suspend_agent(who.person_id, agent_id, (body.reason if body else None) or ""))


@router.post("/agents/{agent_id}/resume", responses={**NOT_FOUND, **CONFLICT}, tags=["agents"])
def resume_agent(agent_id: Id, svc: ServicesDep, who: AdminDep) -> AgentOut:
    return AgentOut.of(svc.identity.resume_agent(who.person_id, agent_id))


@router.post("/agents/{agent_id}/retire", responses={**NOT_FOUND, **CONFLICT}, tags=["agents"])
def retire_agent(agent_id: Id, svc: ServicesDep, who: AdminDep) -> AgentOut:
    """Retire for good: the agent never returns and its id is never reused."""
    return AgentOut.of(svc.identity.retire_agent(who.person_id, agent_id))


@router.put("/agents/{agent_id}/ceiling", responses={**NOT_FOUND, **CONFLICT}, tags=["agents"])
def set_ceiling(agent_id: Id, body: CeilingIn, svc: ServicesDep, who: AdminDep) -> AgentOut:
    """Replace the agent's scope ceiling; narrowing ends tasks that exceed it."""
    return AgentOut.of(svc.identity.set_ceiling(who.person_id, agent_id, body.ceiling))


@router.post("/agents/{agent_id}/keys", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND, tags=["agents"])
def add_key(agent_id: Id, body: JwkIn, svc: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Register a public key (Ed25519 or P-256 JWK) the agent signs its client assertions with."""
    return svc.identity.add_key(who.person_id, agent_id, body.model_dump(exclude_none=True))


@router.delete("/agents/{agent_id}/keys/{kid}", responses=NOT_FOUND, tags=["agents"])
def remove_key(agent_id: Id, kid: Text, svc: ServicesDep, who: AdminDep) -> AgentOut:
    return AgentOut.of(svc.identity.remove_key(who.person_id, agent_id, kid))


# -------------------------------------------------------------- delegations


@router.post("/delegations", status_code=status.HTTP_201_CREATED, tags=["delegations"])
def delegate(body: DelegationIn, svc: ServicesDep, who: AdminDep) -> DelegationOut:
    """A person grants an agent some of their entitlements until `expires_at` (default 30 days)."""
    d = svc.identity.delegate(
        who.person_id,
        person_id=body.person_id,
        agent_id=body.agent_id,
        actions=body.actions,
        expires_at=body.expires_at,
        admin_asserted=who.person_id != body.person_id,
    )
    return DelegationOut.of(d)


@router.get("/delegations", tags=["delegations"])
def list_delegations(
    svc: ServicesDep,
    who: ReaderDep,
    limit: Limit = 50,
    after: After = None,
    person_id: Id | None = None,
    agent_id: Id | None = None,
) -> PageOut[DelegationOut]:
    page = svc.identity.list_delegations(after=after, limit=limit, person_id=person_id, agent_id=agent_id)
    return PageOut(items=[DelegationOut.of(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/delegations/{delegation_id}", responses=NOT_FOUND, tags=["delegations"])
def get_delegation(delegation_id: Id, svc: ServicesDep, who: ReaderDep) -> DelegationOut:
    return DelegationOut.of(svc.identity.get_delegation(delegation_id))


@router.post("/delegations/{delegation_id}/revoke", responses={**NOT_FOUND, **CONFLICT}, tags=["delegations"])
def revoke_delegation(delegation_id: Id, svc: ServicesDep, who: AdminDep) -> DelegationOut:
    return DelegationOut.of(svc.identity.revoke_delegation(who.person_id, delegation_id))
