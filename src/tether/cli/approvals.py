"""`tether approvals list|show|approve|deny` and `tether breakglass start|list|review|end`.

Deciding names a human: approve, deny and break-glass take the caller's admin token
(`--token` or TETHER_TOKEN, asked for when absent) and act as the Person it is bound to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, TypeVar

import typer

from tether.api.auth import Principal
from tether.api.wiring import Services
from tether.approvals import ApprovalService
from tether.cli._common import DataDir, Json, details, emit_json, fail, out, services, table
from tether.identity.model import Role

approvals_app = typer.Typer(help="Approval requests: list, inspect, approve or deny.", no_args_is_help=True)
breakglass_app = typer.Typer(help="Break-glass: time-boxed, justified emergency override.", no_args_is_help=True)

T = TypeVar("T")
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="TETHER_TOKEN", help="Your admin token (approver/breakglass role); asked if absent."
    ),
]


def _approvals(svc: Services) -> ApprovalService:
    if svc.approvals is None:
        fail("approvals are not available")
    assert svc.approvals is not None
    return svc.approvals


def _who(svc: Services, token: str | None, *roles: Role) -> Principal:
    if not token:
        token = typer.prompt("Admin token", hide_input=True)
    principal = svc.admin_tokens.authenticate(token)
    principal.require(*roles)
    return principal


def _run(svc: Services, work: Awaitable[T]) -> T:
    async def go() -> T:
        result = await work
        approvals = _approvals(svc)
        if approvals.notifier is not None:
            await approvals.notifier.drain(timeout=30)
        return result

    return asyncio.run(go())


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, denied, used or expired")] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """List approval requests (pending ones by default)."""
    with services(data_dir) as svc:
        a = _approvals(svc)
        page = a.list_approvals(status=status or None, limit=limit)
        now = a.clock()
    if as_json:
        emit_json([{**_plain(x), "status": x.status_at(now).value} for x in page.items])
        return
    table(
        "Approval requests",
        ["id", "status", "agent", "person", "action", "resource", "approver", "expires"],
        [
            (x.id, x.status_at(now).value, x.agent_id, x.person_id, x.action, x.resource.get("id"), x.approver_rule,
             x.expires_at.isoformat(timespec="seconds"))
            for x in page.items
        ],
    )  # fmt: skip


def _plain(x: object) -> dict[str, object]:
    from tether.cli._common import plain

    doc: dict[str, object] = plain(x)
    return doc


@approvals_app.command("show")
def approvals_show(approval_id: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Show one request with its full context: arguments, prompt, policies and reasons."""
    with services(data_dir) as svc:
        a = _approvals(svc)
        x = a.get(approval_id)
        now = a.clock()
    doc = {**_plain(x), "status": x.status_at(now).value}
    if as_json:
        emit_json(doc)
    else:
        details(f"Approval {x.id}", doc)


def _decide(
    approval_id: str, reason: str, token: str | None, data_dir: DataDir, *, approve: bool, as_json: bool
) -> None:
    with services(data_dir) as svc:
        who = _who(svc, token, Role.APPROVER)
        x = _run(svc, _approvals(svc).decide(who.person_id, approval_id, approve=approve, reason=reason))
    if as_json:
        emit_json(x)
    else:
        out.print(f"{x.id} is now [bold]{x.status.value}[/bold] (decided by {x.decided_by})")


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")],
    token: Token = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Approve one request: the exact call may then run once, in its task, before expiry."""
    _decide(approval_id, reason, token, data_dir, approve=True, as_json=as_json)


@approvals_app.command("deny")
def approvals_deny(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log).")],
    token: Token = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Deny one request."""
    _decide(approval_id, reason, token, data_dir, approve=False, as_json=as_json)


@breakglass_app.command("start")
def breakglass_start(
    agent: Annotated[str, typer.Option(help="The agent id.")],
    justification: Annotated[str, typer.Option(help="Why this emergency override is needed.")],
    task: Annotated[str | None, typer.Option(help="Limit to one task of the agent.")] = None,
    minutes: Annotated[int, typer.Option(min=1, max=60, help="Duration (at most the configured maximum).")] = 15,
    token: Token = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Invoke break-glass for one agent or task (needs the breakglass role; loudly audited)."""
    with services(data_dir) as svc:
        who = _who(svc, token, Role.BREAKGLASS)
        bg = _run(
            svc,
            _approvals(svc).start_breakglass(
                who.person_id, agent_id=agent, task_id=task, justification=justification, duration=minutes * 60
            ),
        )
    if as_json:
        emit_json(bg)
    else:
        out.print(f"break-glass [bold]{bg.id}[/bold] active until {bg.expires_at.isoformat(timespec='seconds')}")
        out.print("A second person must review it: tether breakglass review " + bg.id)


@breakglass_app.command("list")
def breakglass_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only grants whose review is open.")] = False,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """List break-glass grants and their reviews."""
    with services(data_dir) as svc:
        a = _approvals(svc)
        items = a.list_breakglass(open_review=True if open_only else None)
        now = a.clock()
    if as_json:
        emit_json(items)
        return
    table(
        "Break-glass",
        ["id", "agent", "task", "by", "active", "expires", "review"],
        [(b.id, b.agent_id, b.task_id, b.invoked_by, b.active_at(now), b.expires_at.isoformat(timespec="seconds"),
          b.review_status.value) for b in items],
    )  # fmt: skip


@breakglass_app.command("review")
def breakglass_review(
    breakglass_id: str,
    note: Annotated[str, typer.Option(help="The review's finding.")],
    token: Token = None,
    data_dir: DataDir = None,
) -> None:
    """Close a break-glass review (a second person: never the one who invoked it)."""
    with services(data_dir) as svc:
        who = _who(svc, token, Role.AUDITOR, Role.BREAKGLASS, Role.APPROVER)
        bg = _run(svc, _approvals(svc).review_breakglass(who.person_id, breakglass_id, note=note))
    out.print(f"review of {bg.id} closed by {bg.reviewed_by}")


@breakglass_app.command("end")
def breakglass_end(breakglass_id: str, token: Token = None, data_dir: DataDir = None) -> None:
    """End a break-glass grant before its expiry."""
    with services(data_dir) as svc:
        who = _who(svc, token, Role.BREAKGLASS)
        bg = _run(svc, _approvals(svc).end_breakglass(who.person_id, breakglass_id))
    out.print(f"break-glass {bg.id} ended")


__all__ = ["approvals_app", "breakglass_app"]
