"""`tether task list|show|end` and `tether keys rotate|list`."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.api.wiring import Services
from tether.cli._common import DataDir, Json, details, emit_json, fail, operator, out, services, table
from tether.tokens import TaskRow, TokenService
from tether.types import utcnow

task_app = typer.Typer(help="Tasks: bounded pieces of work an agent does for a person.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys (Ed25519, shared by every process).", no_args_is_help=True)


def _tokens(svc: Services) -> TokenService:
    if svc.tokens is None:
        fail("the token service is not available")
    assert svc.tokens is not None
    return svc.tokens


def _row(t: TaskRow) -> dict[str, object]:
    return {
        "id": t.id, "agent_id": t.agent_id, "person_id": t.person_id, "delegation_id": t.delegation_id,
        "purpose": t.purpose, "scopes": list(t.scopes), "audience": t.audience, "actors": list(t.actors),
        "status": t.state(utcnow()), "started_at": t.started_at, "expires_at": t.expires_at,
        "ended_at": t.ended_at, "end_reason": t.end_reason,
    }  # fmt: skip


@task_app.command("list")
def task_list(
    agent: Annotated[str | None, typer.Option(help="Only this agent's tasks.")] = None,
    person: Annotated[str | None, typer.Option(help="Only tasks for this person.")] = None,
    status: Annotated[str | None, typer.Option(help="open, expired or ended.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many.")] = 50,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """List tasks."""
    if status not in (None, "open", "expired", "ended"):
        fail("--status must be open, expired or ended")
    with services(data_dir) as svc:
        rows, _ = _tokens(svc).list_tasks(limit=limit, agent_id=agent, person_id=person, status=status)
    if as_json:
        emit_json([_row(t) for t in rows])
        return
    now = utcnow()
    table("Tasks", ["id", "agent", "person", "scopes", "status", "expires"],
          [(t.id, t.agent_id, t.person_id, list(t.scopes), t.state(now), f"{t.expires_at:%Y-%m-%d %H:%M:%S}")
           for t in rows])  # fmt: skip


@task_app.command("show")
def task_show(task_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Show one task."""
    with services(data_dir) as svc:
        t = _tokens(svc).get_task(task_id)
    if as_json:
        emit_json(_row(t))
    else:
        details(f"Task {t.id}", _row(t))


@task_app.command("end")
def task_end(
    task_id: str,
    reason: Annotated[str, typer.Option(help="Why the task ends (recorded).")] = "ended by operator",
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """End a task now: every token under it fails at every gateway within a second."""
    with services(data_dir) as svc:
        t = _tokens(svc).end_task(operator(svc), task_id, reason)
    if as_json:
        emit_json(_row(t))
    else:
        out.print(f"task [bold]{t.id}[/bold] ended: {reason}")


@keys_app.command("rotate")
def keys_rotate(data_dir: DataDir = None, as_json: Json = False) -> None:
    """Make a new signing key active; the old one stays published until its last token expired."""
    with services(data_dir) as svc:
        tokens = _tokens(svc)
        old = tokens.keyring.active_kid
        kid = tokens.keyring.rotate(operator(svc))
        published = [k["kid"] for k in tokens.keyring.jwks()["keys"]]
    if as_json:
        emit_json({"active_kid": kid, "previous_kid": old, "published": published})
    else:
        out.print(f"active signing key [bold]{kid}[/bold]; {old} stays published until its tokens expire")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, as_json: Json = False) -> None:
    """The published signing keys (the JWKS) and which one signs."""
    with services(data_dir) as svc:
        ring = _tokens(svc).keyring
        keys, active = ring.jwks()["keys"], ring.active_kid
    if as_json:
        emit_json({"active_kid": active, "keys": keys})
    else:
        table("Signing keys", ["kid", "alg", "active"], [(k["kid"], k["alg"], k["kid"] == active) for k in keys])


__all__ = ["keys_app", "task_app"]
