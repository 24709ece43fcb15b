"""`tether audit verify|show|export|erase|checkpoints`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from tether.cli._common import DataDir, Json, emit_json, fail, operator, out, services, table

audit_app = typer.Typer(
    help="The tamper-evident audit chain: verify, show, export, erase content.", no_args_is_help=True
)


@audit_app.command("verify")
def verify_cmd(
    workers: Annotated[int, typer.Option(min=0, max=64, help="Processes for long chains (0: CPU count).")] = 0,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Verify every event and checkpoint; exit 0 when intact, 1 naming the first bad seq."""
    import os

    from tether.audit.verify import verify

    with services(data_dir) as svc:
        file = svc.extras.get("checkpoint_file")
        r = verify(
            svc.db, svc.extras.get("audit_key"), checkpoint_file=Path(file) if file else None,
            key_error=svc.extras.get("audit_key_error"), workers=workers or os.cpu_count() or 1,
        )  # fmt: skip
    if as_json:
        emit_json(r.as_dict())
    elif r.ok:
        rate = r.events / r.seconds if r.seconds > 0 else 0
        out.print(f"[green]intact[/green]: {r.events} events, head seq {r.head_seq} {r.head_hash[:16]}…, "
                  f"{r.checkpoints} checkpoints ({rate:,.0f} events/s)", highlight=False)  # fmt: skip
    else:
        out.print(f"[red]TAMPERED[/red]: first bad seq {r.first_bad_seq} ({r.kind}): {r.detail}", highlight=False)
    if not r.ok:
        raise typer.Exit(1)


def _label(e: dict[str, Any]) -> str:
    bits = [f"[bold]{e['type']}[/bold]", f"#{e['seq']}", e["ts"]]
    if e.get("action"):
        bits.append(str(e["action"]))
    if e.get("decision"):
        bits.append(f"decision={e['decision']}")
    if e.get("outcome"):
        bits.append(f"outcome={json.dumps(e['outcome'], sort_keys=True)}")
    bits.append(f"agent={e.get('agent_id')} person={e.get('person_id')}")
    return "  ".join(bits) + f"  [dim]{e['id']}[/dim]"


@audit_app.command("show")
def show(
    task: Annotated[str, typer.Option("--task", help="Task id whose chain to print.")],
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Print a task's events as a tree (by parent_id)."""
    from tether.audit.query import task_events, tree

    with services(data_dir) as svc:
        events = task_events(svc.db, task)
    if as_json:
        emit_json(events)
        return
    if not events:
        fail(f"no audit events for task {task}")
    root = Tree(f"task [bold]{task}[/bold] ({len(events)} events)")
    nodes: dict[int, Tree] = {-1: root}
    for depth, e in tree(events):
        nodes[depth] = nodes[depth - 1].add(_label(e))
    out.print(root, highlight=False)


@audit_app.command("export")
def export(
    fmt: Annotated[
        str, typer.Option("--format", help="jsonl (records and checkpoints) or ocsf (API Activity).")
    ] = "jsonl",
    since: Annotated[str | None, typer.Option(help="Only events at or after this RFC 3339 time.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Stream the chain to stdout (constant memory)."""
    from tether.audit.query import export_jsonl, export_ocsf

    if fmt not in ("jsonl", "ocsf"):
        fail("--format must be jsonl or ocsf")
    with services(data_dir) as svc:
        lines = export_jsonl(svc.db, since=since) if fmt == "jsonl" else export_ocsf(svc.db, since=since)
        write = sys.stdout.write
        for line in lines:
            write(line)
        sys.stdout.flush()


@audit_app.command("erase")
def erase(
    event_id: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit event).")] = "erasure request (GDPR Art. 17)",
    data_dir: DataDir = None,
) -> None:
    """Erase an event's stored content (prompt, arguments); the chain and its digests stay intact."""
    from tether.audit.query import erase_content

    with services(data_dir) as svc:
        seq = erase_content(svc.db, event_id, actor=operator(svc), reason=reason)
    out.print(f"erased content of {event_id}" + (f" (recorded as seq {seq})" if seq else " (already erased)"))


@audit_app.command("checkpoints")
def checkpoints(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20, data_dir: DataDir = None, as_json: Json = False
) -> None:
    """List the latest signed checkpoints and the audit public key."""
    from tether.audit.checkpoints import list_checkpoints

    with services(data_dir) as svc:
        rows = list_checkpoints(svc.db, after=0, limit=1_000_000)[-limit:]
        key = svc.extras.get("audit_key")
    if as_json:
        emit_json({"public_key": key.jwk() if key else None, "items": [c.as_dict() for c in rows]})
        return
    table("Audit checkpoints", ["seq", "hash", "ts", "kid"], [(c.seq, c.hash, c.ts, c.kid) for c in rows])
    if key is not None:
        out.print(f"public key (JWK): {json.dumps(key.jwk())}", highlight=False, soft_wrap=True)
