"""A world for the MCP gateway tests: Tether serving /mcp in front of real MCP servers
(`mcp-server-git` on temporary repositories, over stdio), task tokens signed by Tether's own
key ring, the real `Enforcer` and the real `ApprovalService`.

While the policy and audit contexts have not landed, two small stand-ins take their place:
`RulePolicy` (a few rules with the PolicyEngine's `decide` signature: scope check, writes need
approval, only the declared repository, destructive tools need approval) and `ChainAudit`
(events appended to the real hash chain in a write transaction). The types the enforcer
imports from `tether.policy` are the approvals tests' stand-ins with the agreed fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import tether.policy as _policy_pkg
from tests import approvals_world as aw
from tests.approvals_world import new_task
from tests.conftest import free_port
from tests.http_gateway_world import Served
from tether.api.wiring import Services, build_services
from tether.audit.chain import append
from tether.audit.model import Event, Receipt
from tether.config import Settings
from tether.gateway._enforce import Enforcer
from tether.types import new_id

if not hasattr(_policy_pkg, "DecisionRequest"):  # the policy context has not landed: agreed shapes
    _policy_pkg.DecisionRequest = aw.DecisionRequest  # type: ignore[attr-defined]
    _policy_pkg.Decision = aw.Decision  # type: ignore[attr-defined]
    _policy_pkg.Effect = aw.Effect  # type: ignore[attr-defined]
    _policy_pkg.Resource = aw.Resource  # type: ignore[attr-defined]

GIT = str(Path(sys.executable).parent / "mcp-server-git")
ACTIONS = ["git:read", "git:write", "mcp:call", "mcp:read"]
WRITE_RULE = "code.write-needs-approval"  # the default pack's forbid for git:write
WORKSPACE_RULE = "git.only-workspace"  # the tests' extra forbid: only the workspace repository
READ_TOOLS = ("git_status", "git_log", "git_diff_unstaged", "git_diff_staged", "git_show", "git_branch", "git_diff")


class RulePolicy:
    """Stand-in for tether.policy.PolicyEngine (same `decide`), with the rules the tests need."""

    bundle_hash = "test-rules"

    def __init__(self, repo: str, *, allow_all: bool = False) -> None:
        self.repo = repo
        self.allow_all = allow_all
        self.requests: list[Any] = []

    def decide(self, req: Any, *, lifted_forbids: frozenset[str] = frozenset(), breakglass: bool = False) -> Any:
        from tether.policy import Decision, Effect

        self.requests.append(req)

        def out(effect: Any, pid: str, reason: str, forbids: tuple[str, ...] = ()) -> Any:
            lifted = tuple(lifted_forbids & set(forbids))
            return Decision(id=new_id("dec"), effect=effect, policy_ids=(pid,), reasons=(reason,), forbid_ids=forbids,
                            approver="sponsor", bundle=self.bundle_hash, lifted=lifted)  # fmt: skip

        if req.action not in req.scopes:
            return out(Effect.DENY, "tether:scope", "the task was not granted this action")
        if self.allow_all:
            return out(Effect.ALLOW, "allow-all", "everything is allowed (conformance runs)")
        r = req.resource
        if r.type == "Repository" and r.id != self.repo:
            return out(Effect.DENY, WORKSPACE_RULE, "agents may only touch the workspace repository")
        forbids: list[tuple[str, str]] = []
        if req.action == "git:write":
            forbids.append((WRITE_RULE, "commits need the sponsor's approval"))
        if r.type == "Tool" and r.attrs.get("destructive") and not r.attrs.get("read_only"):
            forbids.append(("mcp.destructive-tool-needs-approval", "destructive tools need approval"))
        unlifted = [f for f in forbids if f[0] not in lifted_forbids]
        if unlifted:
            return out(Effect.APPROVAL_REQUIRED, unlifted[0][0], unlifted[0][1], tuple(f[0] for f in forbids))
        d = out(Effect.ALLOW, "permit-scoped", "scoped actions are permitted", tuple(f[0] for f in forbids))
        return d


class ChainAudit:
    """Stand-in for services.audit: durable appends to the real chain (one write transaction each)."""

    def __init__(self, services: Services) -> None:
        self.db = services.db
        self.key = secrets.token_bytes(32)

    def _append(self, events: Sequence[Event]) -> list[Receipt]:
        with self.db.write() as conn:
            records = append(conn, list(events))
        return [Receipt(r.seq, r.id, r.hash) for r in records]

    async def record(self, event: Event) -> Receipt:
        return (await asyncio.to_thread(self._append, [event]))[0]

    async def record_many(self, events: Sequence[Event], *, content: Sequence[Any] = ()) -> list[Receipt]:
        return await asyncio.to_thread(self._append, events)

    def record_sync(self, events: Sequence[Event]) -> list[Receipt]:
        return self._append(events)

    def keyed_digest(self, data: bytes) -> str:
        return hmac.new(self.key, data, hashlib.sha256).hexdigest()


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run(["git", "add", "README.md"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "initial"], cwd=path, check=True)
    return path


def git_catalog() -> dict[str, Any]:
    res = {"type": "Repository", "id": "path(/repo_path)", "sensitivity": "=internal"}
    tools: dict[str, Any] = {t: {"action": "git:read", "resource": res} for t in READ_TOOLS}
    tools["git_commit"] = {"action": "git:write", "resource": res, "facts": {"message_bytes": "len(/message)"}}
    tools["git_add"] = {"action": "git:write", "resource": res, "facts": {"files": "/files"}}
    return tools


@dataclass
class World:
    services: Services
    tether: Served
    policy: Any
    repo: Path
    other_repo: Path
    person: str
    other_person: str
    sponsor: str
    agent: str
    task: str
    config_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.tether.base

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def gateway(self) -> Any:
        return self.services.extras["mcp_gateway"]

    def token(self, *, task_id: str | None = None, person: str | None = None, aud: str | None = None,
              scopes: str = " ".join(ACTIONS), **extra: Any) -> str:  # fmt: skip
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.services.settings.issuer, "sub": person or self.person, "act": {"sub": self.agent},
            "client_id": self.agent, "aud": aud or self.url, "scope": scopes, "task_id": task_id or self.task,
            "jti": new_id("tok"), "iat": now, "nbf": now, "exp": now + 300,
        }  # fmt: skip
        claims.update(extra)
        return self.services.verifier.keyring.sign(claims, "at+jwt")  # type: ignore[union-attr]

    def new_task(self, person: str | None = None) -> str:
        return new_task(self.services, self.agent, person or self.person)

    async def pin_all(self, server: str | None = None) -> int:
        """Approve every current tool definition (what `tether mcp pin SERVER` does)."""
        from tether.gateway.mcp.pins import pin_tools

        n = 0
        for name in [server] if server else list(self.gateway.servers):
            spec = self.gateway.servers[name]
            n += len(await pin_tools(self.gateway.pin_store, spec, None, actor=self.sponsor))
        self.gateway.pins_changed()
        return n

    def events(self, kind: str) -> list[dict[str, Any]]:
        return aw_events(self.services, kind)


def aw_events(services: Services, kind: str) -> list[dict[str, Any]]:
    import json

    from sqlalchemy import select

    from tether.store.schema.audit import audit_events

    with services.db.read() as conn:
        rows = conn.execute(select(audit_events.c.body).where(audit_events.c.type == kind)).all()
    return [json.loads(r.body) for r in rows]


def write_config(path: Path, servers: Mapping[str, Any], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"mcp": {"servers": dict(servers), **top}}))
    return path


def policy_dir(tmp: Path, repo: Path, allow_all: bool) -> Path | None:
    """A Cedar bundle for the real engine: the default pack plus the workspace rule, or allow-all."""
    try:
        from tether.policy.engine import DEFAULT_PACK
    except ImportError:
        return None
    d = tmp / "policies"
    d.mkdir()
    if allow_all:
        (d / "allow.cedar").write_text('@id("allow-all")\n@reason("conformance runs allow everything")\n'
                                       "permit (principal, action, resource);\n")  # fmt: skip
        return d
    for f in Path(DEFAULT_PACK).glob("*.cedar"):
        (d / f.name).write_text(f.read_text())
    (d / "90-workspace.cedar").write_text(
        f'@id("{WORKSPACE_RULE}")\n@reason("Agents may only touch the workspace repository")\n'
        f'forbid (principal is Agent, action, resource is Repository)\nunless {{ resource == Repository::"{repo}" }};\n'
    )
    return d


def build_world(tmp: Path, db_url: str, *, servers: Mapping[str, Any] | None = None, allow_all: bool = False,
                **top: Any) -> Iterator[World]:  # fmt: skip
    repo = git_repo(tmp / "repo")
    other = git_repo(tmp / "other")
    if servers is None:
        servers = {
            "git": {"command": GIT, "args": ["--repository", str(repo)], "tools": git_catalog(), "timeout": 10},
            "twin": {"command": GIT, "args": ["--repository", str(other)], "timeout": 10},
        }
    port = free_port()
    config_path = write_config(tmp / "gateway.yaml", servers, **top)
    settings = Settings(data_dir=tmp / "data", database_url=db_url, port=port, public_url=f"http://127.0.0.1:{port}",
                        gateway_config=config_path, policy_dir=policy_dir(tmp, repo, allow_all))  # fmt: skip
    services = build_services(settings, migrate=False)
    real = getattr(services, "policy", None)
    policy: Any = real if real is not None else RulePolicy(str(repo), allow_all=allow_all)
    audit = getattr(services, "audit", None) or ChainAudit(services)
    services.enforcer = Enforcer(policy=policy, audit=audit, approvals=services.approvals, metrics=services.metrics)
    ident = services.identity
    sponsor = ident.create_person("system", email="sponsor@example.com", name="Sam", roles=["approver"],
                                  entitlements=ACTIONS, subject="sponsor")  # fmt: skip
    person = ident.create_person("system", email="pat@example.com", name="Pat", entitlements=ACTIONS, subject="pat")
    other_person = ident.create_person("system", email="quinn@example.com", name="Quinn", entitlements=ACTIONS,
                                       subject="quinn")  # fmt: skip
    agent = ident.create_agent("system", name="Coder", sponsor_id=sponsor.id, owner_team="platform",
                               purpose="works in git", ceiling=ACTIONS)  # fmt: skip
    from tether.api.app import create_app

    try:
        with Served(create_app(services), port=port) as tether:
            task = new_task(services, agent.id, person.id)
            yield World(services, tether, policy, repo, other, person.id, other_person.id, sponsor.id, agent.id,
                        task, config_path)  # fmt: skip
    finally:
        services.close()
