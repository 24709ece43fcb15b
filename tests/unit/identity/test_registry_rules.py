"""The identity registry's rules, enforced in the domain layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tether.api.wiring import Services
from tether.errors import Conflict, TetherError, ValidationFailed
from tether.store.schema.audit import audit_events
from tether.store.schema.identity import revocations, tasks
from tether.types import utcnow


def _events(services: Services, kind: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == kind).order_by(audit_events.c.seq)
        ).all()
    return [json.loads(r.body) for r in rows]


def _person(services: Services, email: str, ents: tuple[str, ...] = ("mail:read", "mail:send")) -> str:
    return services.identity.create_person(
        "per_admin", email=email, name=email.split("@")[0], entitlements=list(ents)
    ).id


def _agent(services: Services, sponsor: str, **kw: Any) -> str:
    args: dict[str, Any] = dict(name="bot", sponsor_id=sponsor, owner_team="t", purpose="p", ceiling=["mail:read"])
    args.update(kw)
    return services.identity.create_agent("per_admin", **args).id


def test_agent_without_active_sponsor_is_refused(services: Services) -> None:
    """An agent needs an existing, active sponsor."""
    with pytest.raises(ValidationFailed) as e:
        _agent(services, "per_nobody")
    assert e.value.field == "sponsor_id"
    alice = _person(services, "alice@example.com")
    services.identity.deprovision_person("per_admin", alice)
    with pytest.raises(ValidationFailed) as e:
        _agent(services, alice)
    assert e.value.field == "sponsor_id"


def test_ceiling_above_sponsor_entitlements_names_the_excess(services: Services) -> None:
    """A ceiling beyond the sponsor's entitlements is refused and the error names each excess action."""
    alice = _person(services, "alice@example.com", ("mail:read",))
    with pytest.raises(TetherError) as e:
        _agent(services, alice, ceiling=["mail:read", "mail:send", "files:write"])
    assert "mail:send" in e.value.detail
    assert "files:write" in e.value.detail
    assert e.value.field == "ceiling"


def test_ceiling_naming_unknown_action_is_refused(services: Services) -> None:
    """A ceiling naming an action not in the catalogue is a validation error on `ceiling`."""
    alice = _person(services, "alice@example.com")
    with pytest.raises(ValidationFailed) as e:
        _agent(services, alice, ceiling=["mail:teleport"])
    assert e.value.field == "ceiling"


def test_advisory_agent_ceiling_is_read_only(services: Services) -> None:
    """An advisory agent may hold only read-type actions."""
    alice = _person(services, "alice@example.com")
    with pytest.raises(TetherError) as e:
        _agent(services, alice, mode="advisory", ceiling=["mail:read", "mail:send"])
    assert "mail:send" in e.value.detail
    assert _agent(services, alice, mode="advisory", ceiling=["mail:read"])


def test_deprovisioning_cascades_with_an_event_and_revocation_each(services: Services) -> None:
    """Deprovisioning suspends sponsored agents, ends delegations and open tasks, each recorded."""
    alice = _person(services, "alice@example.com")
    a1, a2 = _agent(services, alice), _agent(services, alice, name="bot2")
    d = services.identity.delegate("per_admin", person_id=alice, agent_id=a1, actions=["mail:read"])
    now = utcnow()
    with services.db.write() as conn:
        conn.execute(
            insert(tasks).values(
                id="tsk_open1",
                agent_id=a1,
                person_id=alice,
                delegation_id=d.id,
                purpose="x",
                scopes=["mail:read"],
                audience="https://graph",
                actors=[a1],
                status="open",
                started_at=now,
                expires_at=now + timedelta(minutes=10),
            )
        )
    services.identity.deprovision_person("per_admin", alice)
    for a in (a1, a2):
        assert services.identity.get_agent(a).status.value == "suspended"
    assert services.identity.get_delegation(d.id).status.value != "active"
    with services.db.read() as conn:
        row = conn.execute(select(tasks.c.status, tasks.c.end_reason).where(tasks.c.id == "tsk_open1")).one()
        revs = {(r.kind, r.subject_id) for r in conn.execute(select(revocations.c.kind, revocations.c.subject_id))}
    assert row.status != "open"
    assert {("person", alice), ("agent", a1), ("agent", a2)} <= revs
    assert any(sid == d.id for _, sid in revs)
    assert any(sid == "tsk_open1" for _, sid in revs)
    assert len(_events(services, "agent.suspended")) == 2
    assert len(_events(services, "person.deprovisioned")) == 1
    with services.db.read() as conn:
        types = [r.type for r in conn.execute(select(audit_events.c.type).order_by(audit_events.c.seq))]
    assert any(t.startswith("delegation.") and t != "delegation.granted" for t in types)
    assert any(t.startswith("task.") for t in types)


def test_suspend_resume_retire_and_retire_is_final(services: Services) -> None:
    """Suspend and resume toggle; retire is final; a retired agent cannot be resumed or retired again."""
    alice = _person(services, "alice@example.com")
    a = _agent(services, alice)
    assert services.identity.suspend_agent("per_admin", a, "why").status.value == "suspended"
    assert services.identity.resume_agent("per_admin", a).status.value == "active"
    assert services.identity.retire_agent("per_admin", a).status.value == "retired"
    for op in (services.identity.resume_agent, services.identity.retire_agent):
        with pytest.raises(Conflict):
            op("per_admin", a)
    with pytest.raises(Conflict):
        services.identity.suspend_agent("per_admin", a, "")


def test_retired_agent_id_is_never_reused(services: Services) -> None:
    """New agents never get a retired agent's id; the retired row stays."""
    alice = _person(services, "alice@example.com")
    a = _agent(services, alice)
    services.identity.retire_agent("per_admin", a)
    new = {_agent(services, alice, name=f"b{i}") for i in range(20)}
    assert a not in new
    assert services.identity.get_agent(a).status.value == "retired"


def test_every_change_records_actor_and_time(services: Services) -> None:
    """Each registry change lands in the audit chain with who made it and when."""
    alice = _person(services, "alice@example.com")
    a = _agent(services, alice)
    services.identity.suspend_agent("per_admin", a, "r")
    services.identity.resume_agent("per_admin", a)
    services.identity.delegate("per_admin", person_id=alice, agent_id=a, actions=["mail:read"])
    services.identity.retire_agent("per_admin", a)
    with services.db.read() as conn:
        rows = conn.execute(select(audit_events.c.type, audit_events.c.ts, audit_events.c.body)).all()
    kinds = [r.type for r in rows]
    for k in (
        "person.created",
        "agent.created",
        "agent.suspended",
        "agent.resumed",
        "delegation.granted",
        "agent.retired",
    ):
        assert k in kinds, k
    for r in rows:
        if r.type.split(".")[0] in ("person", "agent", "delegation"):
            body = json.loads(r.body)
            assert body["actor"] == "per_admin"
            assert r.ts


def test_duplicate_email_conflicts_and_leaves_one_row(services: Services) -> None:
    """A second person with the same email (any case) is a conflict on `email`."""
    _person(services, "alice@example.com")
    with pytest.raises(Conflict) as e:
        _person(services, "ALICE@example.com")
    assert e.value.field == "email"
    assert services.identity.list_persons().items.__len__() == 1


def test_delegation_beyond_person_entitlements_is_refused(services: Services) -> None:
    """A person cannot delegate an action they do not hold."""
    alice = _person(services, "alice@example.com", ("mail:read",))
    a = _agent(services, alice)
    with pytest.raises(TetherError):
        services.identity.delegate("per_admin", person_id=alice, agent_id=a, actions=["files:write"])
    with services.db.read() as conn:
        assert (
            conn.execute(
                select(func.count()).select_from(audit_events).where(audit_events.c.type == "delegation.granted")
            ).scalar_one()
            == 0
        )
