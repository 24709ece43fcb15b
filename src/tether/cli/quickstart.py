"""`tether quickstart`: a working demo on the embedded default (SQLite in a local data dir).

It sets up, once: a demo organisation (three people, an executing and an advisory agent,
their delegations), the Microsoft 365 simulator as the HTTP gateway's upstream `m365` (on
port+1, with a client-credentials credential in the vault), the demo `notes` MCP server
behind `/mcp` with its tools pinned, the default policy pack, and an admin token in
`<data_dir>/admin-token` (mode 0600). Then it serves everything — API, OAuth, gateways,
console — on 127.0.0.1:<port>.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from tether.api.wiring import Services, build_services
from tether.cli._common import out, settings
from tether.identity.model import Role

DEMO_PEOPLE = [
    (
        "alice@contoso.example",
        "Alice Andersen",
        ["mail:*", "calendar:*", "files:*", "users:read", "git:*", "mcp:*"],
        ["approver"],
    ),
    ("bob@contoso.example", "Bob Baker", ["mail:read", "mail:send", "calendar:read", "files:read", "mcp:read"], []),
    (
        "sec@contoso.example",
        "Sam Security",
        ["mail:read", "files:read", "users:read"],
        ["approver", "auditor", "breakglass"],
    ),
]
SIM_CLIENT, SIM_SECRET = "tether-gateway", "sim-gateway-secret"


def seed(svc: Services) -> dict[str, str]:
    """Create the demo organisation once; returns the ids by name."""
    ids: dict[str, str] = {}
    existing = {p.email: p for p in svc.identity.list_persons(limit=200).items}
    actor = "system"
    for email, name, ents, roles in DEMO_PEOPLE:
        p = existing.get(email) or svc.identity.create_person(
            actor, email=email, name=name, entitlements=ents, roles=roles, subject=email
        )
        ids[email.split("@")[0]] = p.id
    agents = {a.name: a for a in svc.identity.list_agents(limit=200).items}
    in_30_days = datetime.now(UTC) + timedelta(days=30)
    if "alice-assistant" not in agents:
        a = svc.identity.create_agent(
            actor,
            name="alice-assistant",
            sponsor_id=ids["alice"],
            owner_team="platform",
            purpose="Alice's executive assistant: mail, calendar, documents and team notes",
            mode="executing",
            ceiling=["mail:*", "calendar:*", "files:*", "git:*", "mcp:*"],
        )
        svc.identity.delegate(
            ids["alice"],
            person_id=ids["alice"],
            agent_id=a.id,
            expires_at=in_30_days,
            actions=[
                "mail:read",
                "mail:send",
                "calendar:read",
                "calendar:write",
                "files:read",
                "files:share",
                "mcp:call",
                "mcp:read",
            ],
        )
        agents[a.name] = a
    if "bob-reader" not in agents:
        b = svc.identity.create_agent(
            actor,
            name="bob-reader",
            sponsor_id=ids["bob"],
            owner_team="platform",
            purpose="Summarises Bob's inbox; recommends, never acts",
            mode="advisory",
            ceiling=["mail:read", "calendar:read", "files:read", "mcp:read"],
        )
        svc.identity.delegate(
            ids["bob"],
            person_id=ids["bob"],
            agent_id=b.id,
            actions=["mail:read", "calendar:read"],
            expires_at=in_30_days,
        )
        agents[b.name] = b
    ids.update({name: a.id for name, a in agents.items()})
    return ids


def gateway_config(data_dir: Path, sim_port: int) -> Path:
    """The demo gateway config: Graph (simulated) behind /proxy/m365, the notes server behind /mcp."""
    path = data_dir / "gateway.yaml"
    marker = "# Written by `tether quickstart` on each run (the simulator's port may change)."
    if not path.exists() or path.read_text().startswith(marker):
        doc = {
            "http": {
                "upstreams": {
                    "m365": {
                        "base_url": f"http://127.0.0.1:{sim_port}",
                        "route_map": "graph",
                        "credential": "m365-app",
                        "label_credential": "m365-app",
                        "tenant_domains": ["contoso.example"],
                    }
                }
            },
            "mcp": {
                "servers": {
                    "notes": {
                        "command": sys.executable,
                        "args": ["-m", "tether.sim.notes_mcp"],
                        "tools": {
                            "search_notes": {
                                "action": "mcp:read",
                                "resource": {"type": "Tool", "id": "=notes/search_notes"},
                            },
                            "read_note": {"action": "mcp:read", "resource": {"type": "Tool", "id": "=notes/read_note"}},
                        },
                    }
                }
            },
        }
        path.write_text(marker + "\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def run(*, data_dir: Path, port: int, serve: bool, sim_port: int | None = None, workers: int = 1) -> None:
    sim_port = sim_port or port + 1
    s = settings(data_dir, port=port)
    s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = gateway_config(s.data_dir, sim_port)
    s = settings(data_dir, port=port, gateway_config=config)
    svc = build_services(s, migrate=True)
    try:
        ids = seed(svc)
        vault = svc.extras.get("vault")
        if vault is not None:
            vault.add(
                "system",
                "m365-app",
                "client_credentials",
                {"client_secret": SIM_SECRET},
                {
                    "token_url": f"http://127.0.0.1:{sim_port}/contoso.example/oauth2/v2.0/token",
                    "client_id": SIM_CLIENT,
                    "scope": "https://graph.microsoft.com/.default",
                    "app_only": True,
                },
                replace=True,
            )
        _pin_notes(svc)
        token_file = s.data_dir / "admin-token"
        if not token_file.exists():
            admin = svc.identity.find_person(issuer="tether", subject="sec@contoso.example")
            assert admin is not None
            svc.identity.update_person(
                "system",
                admin.id,
                roles=[Role.ADMIN.value, Role.APPROVER.value, Role.AUDITOR.value, Role.BREAKGLASS.value],
            )
            token = svc.admin_tokens.issue(admin.id, Role.ADMIN, "quickstart")
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token)
    finally:
        svc.close()
    out.print(f"[bold]Tether demo[/bold] in {s.data_dir}")
    out.print(json.dumps(ids, indent=2))
    out.print(f"Admin token: {token_file} (mode 0600)   Gateway config: {config}")
    if serve:
        _start_simulator(sim_port)
        out.print(f"Microsoft 365 simulator on http://127.0.0.1:{sim_port}/v1.0 (upstream m365)")
        out.print(
            f"Serving on {s.base_url} — console {s.base_url}/console/, MCP {s.base_url}/mcp, "
            f"Graph {s.base_url}/proxy/m365/v1.0/…  (Ctrl-C to stop)"
        )
        from tether.cli.main import serve as serve_command

        os.environ["TETHER_GATEWAY_CONFIG"] = str(config)
        serve_command(host=s.host, port=port, data_dir=s.data_dir, workers=workers)


def _pin_notes(svc: Services) -> None:
    """Approve the demo server's current tool definitions (a real deployment reviews them first)."""
    try:
        from tether.gateway.mcp.pins import pin_tools
        from tether.store.gateway import SqlPinStore

        spec = svc.extras["mcp_gateway"].config.servers["notes"]
        asyncio.run(pin_tools(SqlPinStore(svc.db), spec, None, actor="system", headers=None))
    except (KeyError, AttributeError, OSError, RuntimeError) as exc:
        out.print(
            f"[yellow]could not pin the demo MCP tools ({type(exc).__name__}); run `tether mcp pin notes`[/yellow]"
        )


def _start_simulator(port: int) -> None:
    import uvicorn

    from tether.sim.m365 import M365Sim, create_app

    sim = M365Sim(tenant_domain="contoso.example", seed=7, clients={SIM_CLIENT: SIM_SECRET})
    server = uvicorn.Server(uvicorn.Config(create_app(sim), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True, name="m365-sim").start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
