"""`tether person …`, `tether agent …`, `tether delegate`."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tether.cli._common import DataDir, Json, details, emit_json, operator, out, plain, services, table
from tether.identity.jwk import thumbprint

person_app = typer.Typer(help="People: who agents act for and who sponsors them.", no_args_is_help=True)
agent_app = typer.Typer(help="Agents: non-human actors with a sponsor, a ceiling and keys.", no_args_is_help=True)

Csv = Annotated[str, typer.Option(help="Comma-separated list.")]


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@person_app.command("add")
def person_add(
    email: Annotated[str, typer.Argument(help="Email address (unique).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    entitlements: Annotated[
        str, typer.Option(help="Actions the person may perform, comma-separated (mail:* allowed).")
    ] = "",
    groups: Annotated[str, typer.Option(help="IdP groups, comma-separated.")] = "",
    roles: Annotated[str, typer.Option(help="admin, approver, auditor, breakglass (comma-separated).")] = "",
    issuer: Annotated[str, typer.Option(help="IdP issuer the person comes from.")] = "tether",
    subject: Annotated[str | None, typer.Option(help="The person's subject at that issuer.")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Register a person."""
    with services(data_dir) as svc:
        p = svc.identity.create_person(
            operator(svc),
            email=email,
            name=name,
            issuer=issuer,
            subject=subject,
            groups=_split(groups),
            roles=_split(roles),
            entitlements=_split(entitlements),
        )
    if as_json:
        emit_json(p)
    else:
        out.print(f"created person [bold]{p.id}[/bold] ({p.email})")


@person_app.command("list")
def person_list(
    status: Annotated[str | None, typer.Option(help="active or deprovisioned")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 200,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """List persons."""
    with services(data_dir) as svc:
        page = svc.identity.list_persons(limit=limit, status=status)
    if as_json:
        emit_json(list(page.items))
        return
    table(
        "Persons",
        ["id", "email", "name", "status", "roles", "entitlements"],
        [(p.id, p.email, p.name, p.status.value, p.roles, p.entitlements) for p in page.items],
    )


@person_app.command("show")
def person_show(person_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Show one person, with effective entitlements."""
    with services(data_dir) as svc:
        p = svc.identity.get_person(person_id)
        effective = sorted(svc.identity.entitlements(p))
    if as_json:
        emit_json({**_dict(p), "effective_entitlements": effective})
    else:
        details(f"Person {p.id}", {**_dict(p), "effective_entitlements": effective})


@person_app.command("deprovision")
def person_deprovision(person_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """The person leaves: suspend their agents, end their delegations and open tasks."""
    with services(data_dir) as svc:
        p = svc.identity.deprovision_person(operator(svc), person_id)
        svc.admin_tokens.revoke_for_person(person_id)
        agents = svc.identity.list_agents(sponsor_id=person_id, limit=200).items
    if as_json:
        emit_json({"person": p, "agents": [{"id": a.id, "status": a.status.value} for a in agents]})
    else:
        out.print(f"deprovisioned {p.id}; agents now: " + ", ".join(f"{a.id}={a.status.value}" for a in agents))


def _dict(obj: object) -> dict[str, object]:
    from tether.cli._common import plain

    data: dict[str, object] = plain(obj)
    return data


@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    sponsor: Annotated[str, typer.Option(help="Sponsor person id (accountable).")],
    owner_team: Annotated[str, typer.Option(help="Platform team that granted access.")],
    purpose: Annotated[str, typer.Option(help="What the agent is for.")],
    ceiling: Annotated[str, typer.Option(help="Actions it may ever use, comma-separated.")] = "",
    mode: Annotated[str, typer.Option(help="advisory (read/recommend only) or executing.")] = "executing",
    scope_approver: Annotated[str | None, typer.Option(help="Governance person who approves its scope.")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Register an agent."""
    with services(data_dir) as svc:
        a = svc.identity.create_agent(
            operator(svc),
            name=name,
            sponsor_id=sponsor,
            owner_team=owner_team,
            purpose=purpose,
            mode=mode,
            ceiling=_split(ceiling),
            scope_approver_id=scope_approver,
        )
    if as_json:
        emit_json(a)
    else:
        out.print(f"created agent [bold]{a.id}[/bold] ({a.status.value})")


@agent_app.command("list")
def agent_list(
    sponsor: Annotated[str | None, typer.Option(help="Only agents of this sponsor.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, active, suspended or retired")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 200,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """List agents."""
    with services(data_dir) as svc:
        page = svc.identity.list_agents(sponsor_id=sponsor, status=status, limit=limit)
    if as_json:
        emit_json(list(page.items))
        return
    table(
        "Agents",
        ["id", "name", "sponsor", "mode", "status", "ceiling", "review due"],
        [(a.id, a.name, a.sponsor_id, a.mode.value, a.status.value, a.ceiling, a.review_due) for a in page.items],
    )


@agent_app.command("show")
def agent_show(agent_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Show one agent, including its registered public keys."""
    with services(data_dir) as svc:
        a = svc.identity.get_agent(agent_id)
    if as_json:
        emit_json(a)
    else:
        details(f"Agent {a.id}", a)


def _transition(verb: str) -> None:
    def command(agent_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
        with services(data_dir) as svc:
            fn = getattr(svc.identity, f"{verb}_agent")
            a = fn(operator(svc), agent_id)
        if as_json:
            emit_json(a)
        else:
            out.print(f"agent {a.id} is now {a.status.value}")

    command.__doc__ = {
        "suspend": "Suspend an agent: its tokens fail at once, its open tasks end.",
        "resume": "Resume a suspended agent (its sponsor must be active).",
        "retire": "Retire an agent for good (final; the id is never reused).",
    }[verb]
    agent_app.command(verb)(command)


for _verb in ("suspend", "resume", "retire"):
    _transition(_verb)


@agent_app.command("approve")
def agent_approve(agent_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Approve a pending agent's scope (as the operator admin)."""
    with services(data_dir) as svc:
        a = svc.identity.approve_agent(operator(svc), agent_id, actor_is_admin=True)
    if as_json:
        emit_json(a)
    else:
        out.print(f"agent {a.id} is now {a.status.value}")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_ed25519_jwk() -> tuple[dict[str, str], dict[str, str]]:
    """A fresh Ed25519 key pair as (private JWK, public JWK), kid = RFC 7638 thumbprint."""
    key = Ed25519PrivateKey.generate()
    x = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    d = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = {"kty": "OKP", "crv": "Ed25519", "x": _b64(x)}
    public["kid"] = thumbprint(public)
    public["alg"] = "EdDSA"
    return {**public, "d": _b64(d)}, public


@agent_app.command("keygen")
def agent_keygen(
    agent_id: str,
    out_file: Annotated[Path | None, typer.Option("--out", help="Where to write the private JWK (mode 0600).")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Create an Ed25519 key for the agent: write the private JWK (0600), register the public key."""
    with services(data_dir) as svc:
        svc.identity.get_agent(agent_id)
        private, public = new_ed25519_jwk()
        path = out_file or svc.settings.data_dir / "agent-keys" / f"{agent_id}.jwk.json"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**private, "agent_id": agent_id}, fh)
        os.chmod(path, 0o600)
        svc.identity.add_key(operator(svc), agent_id, public)
    if as_json:
        emit_json({"agent_id": agent_id, "kid": public["kid"], "key_file": str(path), "public_jwk": public})
    else:
        out.print(f"wrote private key {path} (mode 0600); registered kid {public['kid']} for {agent_id}")


def delegate(
    person: Annotated[str, typer.Option(help="Person id granting the delegation.")],
    agent: Annotated[str, typer.Option(help="Agent id receiving it.")],
    actions: Annotated[str, typer.Option(help="Actions delegated, comma-separated.")],
    days: Annotated[int, typer.Option(min=1, max=365, help="Lifetime in days.")] = 30,
    token: Annotated[
        bool, typer.Option("--token", help="Also print a delegation token for the agent to exchange (≤ 30 days).")
    ] = False,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Delegate some of a person's entitlements to an agent (recorded as admin-asserted)."""
    with services(data_dir) as svc:
        actor = operator(svc)
        d = svc.identity.delegate(
            actor,
            person_id=person,
            agent_id=agent,
            actions=_split(actions),
            expires_at=datetime.now(UTC) + timedelta(days=days),
            admin_asserted=actor != person,
        )
        dtoken = svc.tokens.mint_delegation_token(actor, d.id) if token and svc.tokens is not None else None
    if as_json:
        emit_json({**plain(d), "delegation_token": dtoken} if token else d)
    else:
        out.print(
            f"delegation [bold]{d.id}[/bold]: {person} → {agent}: {', '.join(d.actions)} until {d.expires_at:%Y-%m-%d}"
        )
        if dtoken:
            out.print("delegation token (give it to the agent; it dies with the delegation):")
            out.print(dtoken, highlight=False, soft_wrap=True)
