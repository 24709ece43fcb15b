"""The registry's rules. Every change happens in one write transaction with its audit events.

Rules (architecture §1, issue #3):
- an agent needs an active sponsor; its ceiling never exceeds the sponsor's entitlements;
- an advisory agent's ceiling holds only read-type actions;
- deprovisioning a person suspends every agent they sponsor and ends their delegations and
  open tasks, recording an event (and a revocation) for each;
- suspend / resume / retire; retire is final; ids are random and never reused;
- narrowing a person's entitlements or an agent's ceiling ends the tasks that now exceed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from tether import actions as catalogue
from tether.actions import ActionType, UnknownAction
from tether.audit.model import Event
from tether.errors import Conflict, NotFound, ValidationFailed
from tether.identity.jwk import validate_jwks, validate_public_jwk
from tether.identity.model import (
    Agent,
    AgentMode,
    AgentStatus,
    Delegation,
    DelegationStatus,
    Page,
    Person,
    PersonStatus,
    Role,
)
from tether.identity.ports import IdentityRepo, IdentityStore
from tether.types import AgentId, DelegationId, PersonId, new_id, utcnow

LOCAL_ISSUER = "tether"
DEFAULT_REVIEW_DAYS = 90
MAX_DELEGATION_DAYS = 365
MAX_PAGE = 200


def _actions(values: Iterable[str], field: str) -> list[str]:
    try:
        return catalogue.expand(values)
    except UnknownAction as exc:
        raise ValidationFailed(
            f"unknown action(s): {', '.join(exc.actions)}", field=field, unknown=exc.actions
        ) from exc


class IdentityService:
    def __init__(self, store: IdentityStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    # ---------------------------------------------------------------- persons

    def create_person(
        self,
        actor: str,
        *,
        email: str,
        name: str,
        issuer: str = LOCAL_ISSUER,
        subject: str | None = None,
        groups: Sequence[str] = (),
        roles: Sequence[str] = (),
        entitlements: Sequence[str] = (),
    ) -> Person:
        email = email.strip().lower()
        ents = _actions(entitlements, "entitlements")
        bad_roles = sorted(set(roles) - {r.value for r in Role})
        if bad_roles:
            raise ValidationFailed(f"unknown role(s): {', '.join(bad_roles)}", field="roles")
        now = self.clock()
        pid = PersonId(new_id("per"))
        person = Person(
            id=pid,
            issuer=issuer,
            subject=subject or pid,
            email=email,
            name=name,
            groups=tuple(sorted(set(groups))),
            roles=tuple(sorted(set(roles))),
            entitlements=tuple(ents),
            status=PersonStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )
        with self.store.write() as repo:
            if repo.person_by_email(email) is not None:
                raise Conflict(f"a person with email {email} exists", field="email")
            if repo.person_by_subject(issuer, person.subject) is not None:
                raise Conflict(f"a person with subject {person.subject} at {issuer} exists", field="subject")
            repo.insert_person(person)
            repo.record([self._person_event("person.created", actor, person)])
        return person

    def get_person(self, person_id: str) -> Person:
        with self.store.read() as repo:
            return self._person(repo, person_id)

    def find_person(self, *, issuer: str, subject: str) -> Person | None:
        with self.store.read() as repo:
            return repo.person_by_subject(issuer, subject)

    def find_person_by_email(self, email: str) -> Person | None:
        """By email; callers must also check the issuer (a person is never matched by email alone)."""
        with self.store.read() as repo:
            return repo.person_by_email(email)

    def list_persons(self, *, after: str | None = None, limit: int = 50, status: str | None = None) -> Page[Person]:
        limit = max(1, min(limit, MAX_PAGE))
        with self.store.read() as repo:
            rows = repo.list_persons(after=after, limit=limit + 1, status=status)
        return Page(tuple(rows[:limit]), rows[limit - 1].id if len(rows) > limit else None)

    def entitlements(self, person: Person) -> frozenset[str]:
        """Direct grants plus what the person's groups map to."""
        with self.store.read() as repo:
            return frozenset(person.entitlements) | repo.group_actions(person.groups)

    def update_person(
        self,
        actor: str,
        person_id: str,
        *,
        name: str | None = None,
        groups: Sequence[str] | None = None,
        roles: Sequence[str] | None = None,
        entitlements: Sequence[str] | None = None,
    ) -> Person:
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if groups is not None:
            changes["groups"] = tuple(sorted(set(groups)))
        if roles is not None:
            bad = sorted(set(roles) - {r.value for r in Role})
            if bad:
                raise ValidationFailed(f"unknown role(s): {', '.join(bad)}", field="roles")
            changes["roles"] = tuple(sorted(set(roles)))
        if entitlements is not None:
            changes["entitlements"] = tuple(_actions(entitlements, "entitlements"))
        with self.store.write() as repo:
            person = self._person(repo, person_id)
            if not person.active:
                raise Conflict("a deprovisioned person cannot be changed", field="status")
            updated = replace(person, **changes, updated_at=self.clock())
            repo.update_person(updated)
            events = [self._person_event("person.updated", actor, updated, detail={"changed": sorted(changes)})]
            events += self._end_exceeding_tasks(repo, actor, person_id=person_id)
            repo.record(events)
        return updated

    def set_group_entitlements(self, actor: str, group: str, entitlements: Sequence[str]) -> int:
        """Map an IdP group to actions (a new version of the mapping); returns the version."""
        acts = _actions(entitlements, "entitlements")
        with self.store.write() as repo:
            version = repo.set_group_actions(group, acts, self.clock())
            events = [
                Event(
                    type="group.mapped",
                    actor=actor,
                    detail={"group": group, "actions": acts, "version": version},
                )
            ]
            events += self._end_exceeding_tasks(repo, actor)
            repo.record(events)
        return version

    def deprovision_person(self, actor: str, person_id: str) -> Person:
        """The person leaves: their agents are suspended, delegations and open tasks end."""
        now = self.clock()
        with self.store.write() as repo:
            person = self._person(repo, person_id)
            if not person.active:
                raise Conflict(f"person {person_id} is already deprovisioned", field="status")
            gone = replace(person, status=PersonStatus.DEPROVISIONED, updated_at=now, deprovisioned_at=now)
            repo.update_person(gone)
            events = [self._person_event("person.deprovisioned", actor, gone)]
            repo.add_revocation("person", person_id, "person.deprovisioned", now)
            reason = f"sponsor {person_id} deprovisioned"
            for agent in repo.agents_sponsored_by(person_id):
                if agent.status in (AgentStatus.ACTIVE, AgentStatus.PENDING):
                    suspended = replace(agent, status=AgentStatus.SUSPENDED, updated_at=now)
                    repo.update_agent(suspended)
                    repo.add_revocation("agent", agent.id, "agent.suspended", now)
                    events.append(self._agent_event("agent.suspended", actor, suspended, detail={"reason": reason}))
            for d in repo.list_delegations(after=None, limit=10_000, person_id=person_id, agent_id=None):
                if d.status is DelegationStatus.ACTIVE:
                    events.append(self._end_delegation(repo, actor, d, now, reason="person.deprovisioned"))
            for task in repo.open_tasks(person_id=person_id):
                events.append(
                    self._end_task(repo, actor, task.id, task.agent_id, task.person_id, now, "person.deprovisioned")
                )
            repo.record(events)
        return gone

    # ----------------------------------------------------------------- agents

    def create_agent(
        self,
        actor: str,
        *,
        name: str,
        sponsor_id: str,
        owner_team: str,
        purpose: str,
        mode: AgentMode | str = AgentMode.EXECUTING,
        ceiling: Sequence[str] = (),
        scope_approver_id: str | None = None,
        jwks: dict[str, Any] | None = None,
        review_due: date | None = None,
    ) -> Agent:
        try:
            mode = AgentMode(mode)
        except ValueError as exc:
            raise ValidationFailed(f"mode must be advisory or executing, not {mode!r}", field="mode") from exc
        acts = _actions(ceiling, "ceiling")
        keys = validate_jwks(jwks) if jwks is not None else {"keys": []}
        now = self.clock()
        with self.store.write() as repo:
            sponsor = repo.get_person(sponsor_id)
            if sponsor is None:
                raise ValidationFailed(f"unknown sponsor {sponsor_id}", field="sponsor_id")
            if not sponsor.active:
                raise ValidationFailed(f"sponsor {sponsor_id} is not active", field="sponsor_id")
            if scope_approver_id is not None:
                approver = repo.get_person(scope_approver_id)
                if approver is None or not approver.active:
                    raise ValidationFailed(
                        f"unknown or inactive scope approver {scope_approver_id}", field="scope_approver_id"
                    )
            self._check_ceiling(repo, acts, sponsor, mode)
            # Awaiting governance when someone other than the creator must approve the scope.
            pending = scope_approver_id is not None and scope_approver_id != actor
            agent = Agent(
                id=AgentId(new_id("agt")),
                name=name,
                sponsor_id=sponsor.id,
                owner_team=owner_team,
                scope_approver_id=PersonId(scope_approver_id) if scope_approver_id else None,
                purpose=purpose,
                mode=mode,
                ceiling=tuple(acts),
                jwks=keys,
                status=AgentStatus.PENDING if pending else AgentStatus.ACTIVE,
                review_due=review_due or (now + timedelta(days=DEFAULT_REVIEW_DAYS)).date(),
                created_at=now,
                updated_at=now,
            )
            repo.insert_agent(agent)
            repo.record([self._agent_event("agent.created", actor, agent)])
        return agent

    def get_agent(self, agent_id: str) -> Agent:
        with self.store.read() as repo:
            return self._agent(repo, agent_id)

    def list_agents(
        self, *, after: str | None = None, limit: int = 50, sponsor_id: str | None = None, status: str | None = None
    ) -> Page[Agent]:
        limit = max(1, min(limit, MAX_PAGE))
        with self.store.read() as repo:
            rows = repo.list_agents(after=after, limit=limit + 1, sponsor_id=sponsor_id, status=status)
        return Page(tuple(rows[:limit]), rows[limit - 1].id if len(rows) > limit else None)

    def approve_agent(self, actor: str, agent_id: str, *, actor_is_admin: bool = False) -> Agent:
        """The scope approver (or an admin) accepts a pending agent's scope."""
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is not AgentStatus.PENDING:
                raise Conflict(f"agent {agent_id} is {agent.status.value}, not pending", field="status")
            if not actor_is_admin and actor != agent.scope_approver_id:
                raise ValidationFailed("only the agent's scope approver may approve it", field="actor")
            sponsor = self._person(repo, agent.sponsor_id)
            if not sponsor.active:
                raise Conflict("the sponsor is no longer active", field="sponsor_id")
            active = replace(agent, status=AgentStatus.ACTIVE, updated_at=self.clock())
            repo.update_agent(active)
            repo.record([self._agent_event("agent.approved", actor, active)])
        return active

    def suspend_agent(self, actor: str, agent_id: str, reason: str = "") -> Agent:
        now = self.clock()
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is AgentStatus.RETIRED:
                raise Conflict(f"agent {agent_id} is retired", field="status")
            if agent.status is AgentStatus.SUSPENDED:
                raise Conflict(f"agent {agent_id} is already suspended", field="status")
            suspended = replace(agent, status=AgentStatus.SUSPENDED, updated_at=now)
            repo.update_agent(suspended)
            repo.add_revocation("agent", agent_id, "agent.suspended", now)
            events = [self._agent_event("agent.suspended", actor, suspended, detail={"reason": reason})]
            for task in repo.open_tasks(agent_id=agent_id):
                events.append(
                    self._end_task(repo, actor, task.id, task.agent_id, task.person_id, now, "agent.suspended")
                )
            repo.record(events)
        return suspended

    def resume_agent(self, actor: str, agent_id: str) -> Agent:
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is not AgentStatus.SUSPENDED:
                raise Conflict(f"agent {agent_id} is {agent.status.value}, not suspended", field="status")
            sponsor = self._person(repo, agent.sponsor_id)
            if not sponsor.active:
                raise Conflict("an agent whose sponsor is deprovisioned cannot resume", field="sponsor_id")
            resumed = replace(agent, status=AgentStatus.ACTIVE, updated_at=self.clock())
            repo.update_agent(resumed)
            repo.record([self._agent_event("agent.resumed", actor, resumed)])
        return resumed

    def retire_agent(self, actor: str, agent_id: str) -> Agent:
        """Final: a retired agent never returns, and its id is never issued again."""
        now = self.clock()
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is AgentStatus.RETIRED:
                raise Conflict(f"agent {agent_id} is already retired", field="status")
            retired = replace(agent, status=AgentStatus.RETIRED, updated_at=now, jwks={"keys": []})
            repo.update_agent(retired)
            repo.add_revocation("agent", agent_id, "agent.retired", now)
            events = [self._agent_event("agent.retired", actor, retired)]
            for task in repo.open_tasks(agent_id=agent_id):
                events.append(self._end_task(repo, actor, task.id, task.agent_id, task.person_id, now, "agent.retired"))
            for d in repo.list_delegations(after=None, limit=10_000, person_id=None, agent_id=agent_id):
                if d.status is DelegationStatus.ACTIVE:
                    events.append(self._end_delegation(repo, actor, d, now, reason="agent.retired"))
            repo.record(events)
        return retired

    def set_ceiling(self, actor: str, agent_id: str, ceiling: Sequence[str]) -> Agent:
        acts = _actions(ceiling, "ceiling")
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is AgentStatus.RETIRED:
                raise Conflict(f"agent {agent_id} is retired", field="status")
            self._check_ceiling(repo, acts, self._person(repo, agent.sponsor_id), agent.mode)
            updated = replace(agent, ceiling=tuple(acts), updated_at=self.clock())
            repo.update_agent(updated)
            events = [self._agent_event("agent.ceiling_changed", actor, updated)]
            events += self._end_exceeding_tasks(repo, actor, agent_id=agent_id)
            repo.record(events)
        return updated

    def add_key(self, actor: str, agent_id: str, jwk: dict[str, Any]) -> dict[str, Any]:
        key = validate_public_jwk(jwk, "jwk")
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            if agent.status is AgentStatus.RETIRED:
                raise Conflict(f"agent {agent_id} is retired", field="status")
            keys = [k for k in agent.jwks.get("keys", []) if k["kid"] != key["kid"]]
            if len(keys) >= 10:
                raise ValidationFailed("at most 10 keys per agent", field="jwk")
            updated = replace(agent, jwks={"keys": [*keys, key]}, updated_at=self.clock())
            repo.update_agent(updated)
            repo.record([self._agent_event("agent.key_added", actor, updated, detail={"kid": key["kid"]})])
        return key

    def remove_key(self, actor: str, agent_id: str, kid: str) -> Agent:
        with self.store.write() as repo:
            agent = self._agent(repo, agent_id)
            keys = [k for k in agent.jwks.get("keys", []) if k["kid"] != kid]
            if len(keys) == len(agent.jwks.get("keys", [])):
                raise NotFound(f"agent {agent_id} has no key {kid}", field="kid")
            updated = replace(agent, jwks={"keys": keys}, updated_at=self.clock())
            repo.update_agent(updated)
            repo.record([self._agent_event("agent.key_removed", actor, updated, detail={"kid": kid})])
        return updated

    # ------------------------------------------------------------ delegations

    def delegate(
        self,
        actor: str,
        *,
        person_id: str,
        agent_id: str,
        actions: Sequence[str],
        expires_at: datetime | None = None,
        admin_asserted: bool = False,
    ) -> Delegation:
        """The person grants the agent some of their own entitlements, until `expires_at`."""
        acts = _actions(actions, "actions")
        if not acts:
            raise ValidationFailed("a delegation names at least one action", field="actions")
        now = self.clock()
        expires_at = expires_at or now + timedelta(days=30)
        if expires_at <= now:
            raise ValidationFailed("expires_at is in the past", field="expires_at")
        if expires_at > now + timedelta(days=MAX_DELEGATION_DAYS):
            raise ValidationFailed(f"a delegation lasts at most {MAX_DELEGATION_DAYS} days", field="expires_at")
        with self.store.write() as repo:
            person = self._person(repo, person_id, field="person_id", missing=ValidationFailed)
            if not person.active:
                raise ValidationFailed(f"person {person_id} is not active", field="person_id")
            agent = self._agent(repo, agent_id, field="agent_id", missing=ValidationFailed)
            if agent.status in (AgentStatus.RETIRED, AgentStatus.SUSPENDED):
                raise ValidationFailed(f"agent {agent_id} is {agent.status.value}", field="agent_id")
            ents = frozenset(person.entitlements) | repo.group_actions(person.groups)
            excess = sorted(set(acts) - ents)
            if excess:
                raise ValidationFailed(
                    f"the person is not entitled to: {', '.join(excess)}", field="actions", excess=excess
                )
            beyond = sorted(set(acts) - set(agent.ceiling))
            if beyond:
                raise ValidationFailed(
                    f"beyond the agent's ceiling: {', '.join(beyond)}", field="actions", excess=beyond
                )
            d = Delegation(
                id=DelegationId(new_id("dlg")),
                person_id=person.id,
                agent_id=agent.id,
                actions=tuple(acts),
                status=DelegationStatus.ACTIVE,
                created_at=now,
                expires_at=expires_at,
                admin_asserted=admin_asserted,
            )
            repo.insert_delegation(d)
            repo.record(
                [
                    Event(
                        type="delegation.granted",
                        actor=actor,
                        person_id=person.id,
                        agent_id=agent.id,
                        sponsor_id=agent.sponsor_id,
                        detail={
                            "delegation_id": d.id,
                            "actions": acts,
                            "expires_at": expires_at.isoformat(),
                            "admin_asserted": admin_asserted,
                        },
                    )
                ]
            )
        return d

    def get_delegation(self, delegation_id: str) -> Delegation:
        with self.store.read() as repo:
            d = repo.get_delegation(delegation_id)
        if d is None:
            raise NotFound(f"no delegation {delegation_id}")
        return d

    def list_delegations(
        self, *, after: str | None = None, limit: int = 50, person_id: str | None = None, agent_id: str | None = None
    ) -> Page[Delegation]:
        limit = max(1, min(limit, MAX_PAGE))
        with self.store.read() as repo:
            rows = repo.list_delegations(after=after, limit=limit + 1, person_id=person_id, agent_id=agent_id)
        return Page(tuple(rows[:limit]), rows[limit - 1].id if len(rows) > limit else None)

    def revoke_delegation(self, actor: str, delegation_id: str) -> Delegation:
        now = self.clock()
        with self.store.write() as repo:
            d = repo.get_delegation(delegation_id)
            if d is None:
                raise NotFound(f"no delegation {delegation_id}")
            if d.status is not DelegationStatus.ACTIVE:
                raise Conflict(f"delegation {delegation_id} is already {d.status.value}", field="status")
            events = [self._end_delegation(repo, actor, d, now, reason="delegation.revoked")]
            repo.record(events)
            ended = repo.get_delegation(delegation_id)
        assert ended is not None
        return ended

    # ---------------------------------------------------------------- helpers

    def _check_ceiling(self, repo: IdentityRepo, acts: Sequence[str], sponsor: Person, mode: AgentMode) -> None:
        ents = frozenset(sponsor.entitlements) | repo.group_actions(sponsor.groups)
        excess = sorted(set(acts) - ents)
        if excess:
            raise ValidationFailed(
                f"the ceiling exceeds the sponsor's entitlements: {', '.join(excess)}",
                field="ceiling",
                excess=excess,
            )
        if mode is AgentMode.ADVISORY:
            writes = sorted(a for a in acts if catalogue.action_type(a) is not ActionType.READ)
            if writes:
                raise ValidationFailed(
                    f"an advisory agent may only hold read actions, not: {', '.join(writes)}",
                    field="ceiling",
                    excess=writes,
                )

    def _end_exceeding_tasks(
        self, repo: IdentityRepo, actor: str, *, person_id: str | None = None, agent_id: str | None = None
    ) -> list[Event]:
        """After a narrowing, end every open task whose scopes the new grants no longer cover."""
        now = self.clock()
        events: list[Event] = []
        for task in repo.open_tasks(person_id=person_id, agent_id=agent_id):
            person = repo.get_person(task.person_id)
            agent = repo.get_agent(task.agent_id)
            if person is None or agent is None:
                continue
            allowed = (frozenset(person.entitlements) | repo.group_actions(person.groups)) & set(agent.ceiling)
            if not set(task.scopes) <= allowed:
                events.append(
                    self._end_task(repo, actor, task.id, task.agent_id, task.person_id, now, "grant.narrowed")
                )
        return events

    def _end_task(
        self, repo: IdentityRepo, actor: str, task_id: str, agent_id: str, person_id: str, now: datetime, reason: str
    ) -> Event:
        repo.end_task(task_id, reason, now)
        repo.add_revocation("task", task_id, reason, now)
        return Event(
            type="task.ended",
            actor=actor,
            task_id=task_id,
            agent_id=agent_id,
            person_id=person_id,
            detail={"reason": reason},
        )

    def _end_delegation(self, repo: IdentityRepo, actor: str, d: Delegation, now: datetime, *, reason: str) -> Event:
        repo.update_delegation(replace(d, status=DelegationStatus.REVOKED, ended_at=now))
        repo.add_revocation("delegation", d.id, reason, now)
        return Event(
            type="delegation.revoked",
            actor=actor,
            person_id=d.person_id,
            agent_id=d.agent_id,
            detail={"delegation_id": d.id, "reason": reason},
        )

    @staticmethod
    def _person(
        repo: IdentityRepo, person_id: str, *, field: str | None = None, missing: type[Exception] = NotFound
    ) -> Person:
        p = repo.get_person(person_id)
        if p is None:
            raise missing(f"no person {person_id}", field=field)  # type: ignore[call-arg]
        return p

    @staticmethod
    def _agent(
        repo: IdentityRepo, agent_id: str, *, field: str | None = None, missing: type[Exception] = NotFound
    ) -> Agent:
        a = repo.get_agent(agent_id)
        if a is None:
            raise missing(f"no agent {agent_id}", field=field)  # type: ignore[call-arg]
        return a

    @staticmethod
    def _person_event(kind: str, actor: str, p: Person, detail: dict[str, Any] | None = None) -> Event:
        return Event(
            type=kind,
            actor=actor,
            person_id=p.id,
            detail={"email": p.email, "status": p.status.value, **(detail or {})},
        )

    @staticmethod
    def _agent_event(kind: str, actor: str, a: Agent, detail: dict[str, Any] | None = None) -> Event:
        return Event(
            type=kind,
            actor=actor,
            agent_id=a.id,
            sponsor_id=a.sponsor_id,
            person_id=a.sponsor_id,
            detail={
                "status": a.status.value,
                "mode": a.mode.value,
                "ceiling": list(a.ceiling),
                **(detail or {}),
            },
        )


__all__ = ["LOCAL_ISSUER", "IdentityService"]
