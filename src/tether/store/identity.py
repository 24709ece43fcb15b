"""The identity repository over SQLAlchemy Core (implements tether.identity.ports)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from tether.audit import chain
from tether.audit.model import Event, Record
from tether.identity.model import (
    Agent,
    AgentMode,
    AgentStatus,
    Delegation,
    DelegationStatus,
    Person,
    PersonStatus,
)
from tether.identity.ports import OpenTask
from tether.store.db import Database, RepoStore
from tether.store.schema.identity import (
    agents,
    delegations,
    group_entitlements,
    persons,
    revocations,
    tasks,
)
from tether.types import AgentId, DelegationId, PersonId


def _person(r: Any) -> Person:
    return Person(
        id=PersonId(r.id),
        issuer=r.issuer,
        subject=r.subject,
        email=r.email,
        name=r.name,
        groups=tuple(r.groups),
        roles=tuple(r.roles),
        entitlements=tuple(r.entitlements),
        status=PersonStatus(r.status),
        created_at=r.created_at,
        updated_at=r.updated_at,
        deprovisioned_at=r.deprovisioned_at,
    )


def _agent(r: Any) -> Agent:
    return Agent(
        id=AgentId(r.id),
        name=r.name,
        sponsor_id=PersonId(r.sponsor_id),
        owner_team=r.owner_team,
        scope_approver_id=PersonId(r.scope_approver_id) if r.scope_approver_id else None,
        purpose=r.purpose,
        mode=AgentMode(r.mode),
        ceiling=tuple(r.ceiling),
        jwks=r.jwks,
        status=AgentStatus(r.status),
        review_due=r.review_due,
        created_at=r.created_at,
        updated_at=r.updated_at,
        last_used_at=r.last_used_at,
    )


def _delegation(r: Any) -> Delegation:
    return Delegation(
        id=DelegationId(r.id),
        person_id=PersonId(r.person_id),
        agent_id=AgentId(r.agent_id),
        actions=tuple(r.actions),
        status=DelegationStatus(r.status),
        created_at=r.created_at,
        expires_at=r.expires_at,
        ended_at=r.ended_at,
        admin_asserted=bool(r.admin_asserted),
    )


def _person_row(p: Person) -> dict[str, Any]:
    return {
        "id": p.id,
        "issuer": p.issuer,
        "subject": p.subject,
        "email": p.email,
        "name": p.name,
        "groups": list(p.groups),
        "roles": list(p.roles),
        "entitlements": list(p.entitlements),
        "status": p.status.value,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "deprovisioned_at": p.deprovisioned_at,
    }


def _agent_row(a: Agent) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "sponsor_id": a.sponsor_id,
        "owner_team": a.owner_team,
        "scope_approver_id": a.scope_approver_id,
        "purpose": a.purpose,
        "mode": a.mode.value,
        "ceiling": list(a.ceiling),
        "jwks": a.jwks,
        "status": a.status.value,
        "review_due": a.review_due,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
        "last_used_at": a.last_used_at,
    }


def _delegation_row(d: Delegation) -> dict[str, Any]:
    return {
        "id": d.id,
        "person_id": d.person_id,
        "agent_id": d.agent_id,
        "actions": list(d.actions),
        "status": d.status.value,
        "created_at": d.created_at,
        "expires_at": d.expires_at,
        "ended_at": d.ended_at,
        "admin_asserted": int(d.admin_asserted),
    }


class SqlIdentityRepo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # persons
    def get_person(self, person_id: str) -> Person | None:
        r = self.conn.execute(select(persons).where(persons.c.id == person_id)).first()
        return _person(r) if r else None

    def person_by_email(self, email: str) -> Person | None:
        r = self.conn.execute(select(persons).where(func.lower(persons.c.email) == email.lower())).first()
        return _person(r) if r else None

    def person_by_subject(self, issuer: str, subject: str) -> Person | None:
        q = select(persons).where(persons.c.issuer == issuer, persons.c.subject == subject)
        r = self.conn.execute(q).first()
        return _person(r) if r else None

    def insert_person(self, person: Person) -> None:
        self.conn.execute(insert(persons).values(**_person_row(person)))

    def update_person(self, person: Person) -> None:
        self.conn.execute(update(persons).where(persons.c.id == person.id).values(**_person_row(person)))

    def list_persons(self, *, after: str | None, limit: int, status: str | None) -> list[Person]:
        q = select(persons).order_by(persons.c.id).limit(limit)
        if after:
            q = q.where(persons.c.id > after)
        if status:
            q = q.where(persons.c.status == status)
        return [_person(r) for r in self.conn.execute(q)]

    def group_actions(self, groups: Sequence[str]) -> set[str]:
        if not groups:
            return set()
        q = select(group_entitlements.c.actions).where(group_entitlements.c.group_name.in_(list(groups)))
        out: set[str] = set()
        for (acts,) in self.conn.execute(q):
            out.update(acts)
        return out

    def set_group_actions(self, group: str, actions: Sequence[str], now: datetime) -> int:
        q = select(group_entitlements.c.version).where(group_entitlements.c.group_name == group)
        current = self.conn.execute(q).scalar()
        if current is None:
            self.conn.execute(
                insert(group_entitlements).values(group_name=group, actions=list(actions), version=1, updated_at=now)
            )
            return 1
        self.conn.execute(
            update(group_entitlements)
            .where(group_entitlements.c.group_name == group)
            .values(actions=list(actions), version=current + 1, updated_at=now)
        )
        return int(current) + 1

    # agents
    def get_agent(self, agent_id: str) -> Agent | None:
        r = self.conn.execute(select(agents).where(agents.c.id == agent_id)).first()
        return _agent(r) if r else None

    def insert_agent(self, agent: Agent) -> None:
        self.conn.execute(insert(agents).values(**_agent_row(agent)))

    def update_agent(self, agent: Agent) -> None:
        self.conn.execute(update(agents).where(agents.c.id == agent.id).values(**_agent_row(agent)))

    def list_agents(self, *, after: str | None, limit: int, sponsor_id: str | None, status: str | None) -> list[Agent]:
        q = select(agents).order_by(agents.c.id).limit(limit)
        if after:
            q = q.where(agents.c.id > after)
        if sponsor_id:
            q = q.where(agents.c.sponsor_id == sponsor_id)
        if status:
            q = q.where(agents.c.status == status)
        return [_agent(r) for r in self.conn.execute(q)]

    def agents_sponsored_by(self, person_id: str) -> list[Agent]:
        q = select(agents).where(agents.c.sponsor_id == person_id).order_by(agents.c.id)
        return [_agent(r) for r in self.conn.execute(q)]

    # delegations
    def get_delegation(self, delegation_id: str) -> Delegation | None:
        r = self.conn.execute(select(delegations).where(delegations.c.id == delegation_id)).first()
        return _delegation(r) if r else None

    def insert_delegation(self, delegation: Delegation) -> None:
        self.conn.execute(insert(delegations).values(**_delegation_row(delegation)))

    def update_delegation(self, delegation: Delegation) -> None:
        self.conn.execute(
            update(delegations).where(delegations.c.id == delegation.id).values(**_delegation_row(delegation))
        )

    def list_delegations(
        self, *, after: str | None, limit: int, person_id: str | None, agent_id: str | None
    ) -> list[Delegation]:
        q = select(delegations).order_by(delegations.c.id).limit(limit)
        if after:
            q = q.where(delegations.c.id > after)
        if person_id:
            q = q.where(delegations.c.person_id == person_id)
        if agent_id:
            q = q.where(delegations.c.agent_id == agent_id)
        return [_delegation(r) for r in self.conn.execute(q)]

    # tasks and revocations
    def open_tasks(self, *, person_id: str | None = None, agent_id: str | None = None) -> list[OpenTask]:
        q = select(tasks.c.id, tasks.c.agent_id, tasks.c.person_id, tasks.c.scopes).where(tasks.c.status == "open")
        if person_id:
            q = q.where(tasks.c.person_id == person_id)
        if agent_id:
            q = q.where(tasks.c.agent_id == agent_id)
        return [OpenTask(r.id, r.agent_id, r.person_id, tuple(r.scopes)) for r in self.conn.execute(q)]

    def end_task(self, task_id: str, reason: str, now: datetime) -> bool:
        res = self.conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == "open")
            .values(status="ended", ended_at=now, end_reason=reason)
        )
        return bool(res.rowcount)

    def add_revocation(self, kind: str, subject_id: str, reason: str, now: datetime) -> int:
        res = self.conn.execute(
            insert(revocations).values(kind=kind, subject_id=subject_id, reason=reason, created_at=now)
        )
        pk = res.inserted_primary_key
        return int(pk[0]) if pk else 0

    def record(self, events: Sequence[Event]) -> list[Record]:
        return chain.append(self.conn, events)


class SqlIdentityStore(RepoStore[SqlIdentityRepo]):
    def __init__(self, db: Database) -> None:
        super().__init__(db, SqlIdentityRepo)


__all__ = ["SqlIdentityRepo", "SqlIdentityStore"]
