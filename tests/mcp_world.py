"""A world for the MCP gateway tests: Tether serving /mcp in front of real MCP servers
(`mcp-server-git` on temporary repositories, over stdio), task tokens signed by Tether's own
key ring, the real `Enforcer` and the real `ApprovalService`.

The policy is the real Cedar engine on the default pack plus one workspace rule (or allow-all for
the conformance runs); audit is the real writer.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.approvals_world import new_task
from tests.conftest import free_port
from tests.http_gateway_world import Served
from tether.api.wiring import Services, build_services
from tether.config import Settings
from tether.gateway._enforce import Enforcer
from tether.types import new_id

GIT = str(Path(sys.executable).parent / "mcp-server-git")
ACTIONS = ["git:read", "git:write", "mcp:call", "mcp:read"]
WRITE_RULE = "code.write-needs-approval"  # the default pack's forbid for git:write
WORKSPACE_RULE = "git.only-workspace"  # the tests' extra forbid: only the workspace repository
READ_TOOLS = ("git_status", "git_log", "git_diff_unstaged", "git_diff_staged", "git_show", "git_branch", "git_diff")


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
        rows = conn.execute(
            select(audit_events.c.body).where(audit_events.c.type == kind).order_by(audit_events.c.seq)
        ).all()
    return [json.loads(r.body) for r in rows]


def write_config(path: Path, servers: Mapping[str, Any], **top: Any) -> Path:
    path.write_text(yaml.safe_dump({"mcp": {"servers": dict(servers), **top}}))
    return path


def policy_dir(tmp: Path, repo: Path, allow_all: bool, extra: str = "") -> Path:
    """A Cedar bundle for the real engine: the default pack plus the workspace rule, or allow-all (plus `extra`)."""
    from tether.policy.engine import DEFAULT_PACK

    d = tmp / "policies"
    d.mkdir()
    if extra:
        (d / "95-extra.cedar").write_text(extra)
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
                extra_policy: str = "", **top: Any) -> Iterator[World]:  # fmt: skip
    repo = git_repo(tmp / "repo")
    other = git_repo(tmp / "other")
    if servers is None:
        servers = {
            "git": {"command": GIT, "args": ["--repository", str(repo)], "tools": git_catalog(), "timeout": 10},
            "twin": {"command": GIT, "args": ["--repository", str(other)], "timeout": 10},
        }
    port = free_port()
    config_path = write_config(tmp / "gateway.yaml", servers, **top)
    policies = policy_dir(tmp, repo, allow_all, extra_policy)
    settings = Settings(data_dir=tmp / "data", database_url=db_url, port=port, public_url=f"http://127.0.0.1:{port}",
                        gateway_config=config_path, policy_dir=policies)  # fmt: skip
    services = build_services(settings, migrate=False)
    policy = services.policy
    services.enforcer = Enforcer(policy=policy, audit=services.audit, approvals=services.approvals,
                                 metrics=services.metrics)  # fmt: skip
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
