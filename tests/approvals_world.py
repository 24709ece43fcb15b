"""A small organisation for approvals tests, and hand-made policy/token values.

The values are the real `tether.policy` / `tether.tokens` types when those contexts are
present; until they land, frozen stand-ins with exactly the agreed fields (INTERFACES.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import insert

from tether.api.wiring import Services
from tether.canon import digest
from tether.store.schema.identity import tasks
from tether.types import new_id, utcnow

try:
    from tether.policy import Decision, DecisionRequest, Effect, Resource
except ImportError:  # the policy context has not landed yet

    class Effect(StrEnum):  # type: ignore[no-redef]
        ALLOW = "allow"
        DENY = "deny"
        APPROVAL_REQUIRED = "approval_required"

    @dataclass(frozen=True, slots=True)
    class Resource:  # type: ignore[no-redef]
        type: str
        id: str
        system: str
        sensitivity: str = "internal"
        owner: str | None = None
        attrs: Mapping[str, Any] = field(default_factory=dict)

    @dataclass(frozen=True, slots=True)
    class DecisionRequest:  # type: ignore[no-redef]
        agent_id: str
        person_id: str
        actors: tuple[str, ...]
        task_id: str
        scopes: frozenset[str]
        action: str
        resource: Resource
        facts: Mapping[str, Any]
        usage: Mapping[str, int] = field(default_factory=dict)
        constraints: Mapping[str, Any] | None = None

    @dataclass(frozen=True, slots=True)
    class Decision:  # type: ignore[no-redef]
        id: str
        effect: Effect
        policy_ids: tuple[str, ...]
        reasons: tuple[str, ...]
        forbid_ids: tuple[str, ...]
        approver: str | None
        bundle: str
        lifted: tuple[str, ...] = ()


try:
    from tether.tokens import VerifiedToken
except ImportError:  # the tokens context has not landed yet

    @dataclass(frozen=True, slots=True)
    class VerifiedToken:  # type: ignore[no-redef]
        digest: str
        person_id: str
        agent_id: str
        actors: tuple[str, ...]
        client_id: str
        audience: str
        scopes: frozenset[str]
        task_id: str
        jti: str
        issued_at: int
        expires_at: int
        constraints: dict[str, Any] | None
        claims: Mapping[str, Any]


@dataclass
class World:
    services: Services
    sponsor: str
    person: str
    security: str  # member of group "security", approver role
    outsider: str  # approver role, no relation
    breakglass: str  # has the breakglass role
    agent: str
    task: str
    other_task: str


def make_world(services: Services) -> World:
    ident = services.identity
    acts = ["mail:send", "mail:read", "files:share"]
    sponsor = ident.create_person("system", email="sponsor@example.com", name="Sam Sponsor", roles=["approver"],
                                  entitlements=acts, subject="sponsor")  # fmt: skip
    person = ident.create_person("system", email="pat@example.com", name="Pat Person", entitlements=acts,
                                 roles=["approver"], subject="pat")  # fmt: skip
    security = ident.create_person("system", email="sec@example.com", name="Sec Reviewer", roles=["approver"],
                                   groups=["security"], subject="sec")  # fmt: skip
    outsider = ident.create_person("system", email="out@example.com", name="Olive Outsider", roles=["approver"],
                                   subject="out")  # fmt: skip
    bg = ident.create_person("system", email="bg@example.com", name="Bea Breakglass", roles=["breakglass", "admin"],
                             subject="bg")  # fmt: skip
    agent = ident.create_agent("system", name="Mail helper", sponsor_id=sponsor.id, owner_team="platform",
                               purpose="drafts and sends mail", ceiling=acts)  # fmt: skip
    t1, t2 = new_task(services, agent.id, person.id), new_task(services, agent.id, person.id)
    return World(services, sponsor.id, person.id, security.id, outsider.id, bg.id, agent.id, t1, t2)


def new_task(services: Services, agent_id: str, person_id: str) -> str:
    task_id = new_id("tsk")
    now = utcnow()
    with services.db.write() as conn:
        conn.execute(
            insert(tasks).values(
                id=task_id,
                agent_id=agent_id,
                person_id=person_id,
                purpose="send the quarterly report",
                scopes=["mail:send"],
                audience="http://127.0.0.1:8700/mcp",
                actors=[agent_id],
                status="active",
                started_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    return task_id


def token(w: World, task_id: str | None = None) -> VerifiedToken:
    return VerifiedToken(
        digest=hashlib.sha256(b"t").hexdigest(), person_id=w.person, agent_id=w.agent, actors=(w.agent,),
        client_id=w.agent, audience="http://127.0.0.1:8700/mcp", scopes=frozenset({"mail:send"}),
        task_id=task_id or w.task, jti=new_id("tok"), issued_at=0, expires_at=2**31, constraints=None, claims={},
    )  # fmt: skip


def request_for(w: World, *, task_id: str | None = None, to: str = "partner@external.example") -> tuple[Any, str]:
    """A mail:send DecisionRequest and its request digest (the digest changes with the recipient)."""
    resource = Resource(type="MailMessage", id="draft-1", system="m365.mail", sensitivity="confidential")
    tid = task_id or w.task
    req = DecisionRequest(
        agent_id=w.agent, person_id=w.person, actors=(), task_id=tid, scopes=frozenset({"mail:send"}),
        action="mail:send", resource=resource, facts={"recipients": [to], "external_recipients": 1},
    )  # fmt: skip
    return req, digest({"task_id": tid, "action": "mail:send", "resource": "draft-1", "to": to})


def decision(approver: str | None = "sponsor") -> Any:
    return Decision(
        id=new_id("dec"), effect=Effect.APPROVAL_REQUIRED, policy_ids=("confidential-external-send",),
        reasons=("Sending confidential mail outside the company needs approval",),
        forbid_ids=("confidential-external-send",), approver=approver, bundle="test-bundle",
    )  # fmt: skip


async def pending(w: World, *, approver: str | None = "sponsor", task_id: str | None = None,
                  summary: Mapping[str, Any] | None = None, prompt: str | None = "send the report") -> Any:  # fmt: skip
    """A pending approval made through ApprovalService.request with a real-shaped Decision."""
    req, dig = request_for(w, task_id=task_id)
    assert w.services.approvals is not None
    return await w.services.approvals.request(
        decision=decision(approver), req=req, token=token(w, task_id), request_digest=dig,
        summary=summary or {"to": ["partner@external.example"], "subject": "Q3 report"}, prompt=prompt, gateway="mcp",
    )  # fmt: skip
