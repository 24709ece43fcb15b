"""`tether policy validate|test|explain|replay`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from tether.cli._common import DataDir, Json, emit_json, err, fail, out, services
from tether.policy import BundleError, load_bundle
from tether.policy.testing import decide_case, run_tests

policy_app = typer.Typer(help="Policy as code: validate, test, explain, replay.", no_args_is_help=True)
Dir = Annotated[Path, typer.Argument(help="Policy bundle directory (*.cedar, optional tests/*.yaml).")]


def _load(directory: Path):  # type: ignore[no-untyped-def]
    try:
        return load_bundle(directory)
    except BundleError as exc:
        for p in exc.problems:
            err.print(f"[red]{p}[/red]", highlight=False)
        raise typer.Exit(1) from None


@policy_app.command("validate")
def validate(directory: Dir, as_json: Json = False) -> None:
    """Parse and validate a bundle against Tether's Cedar schema (exit 1 naming file:line on error)."""
    b = _load(directory)
    if as_json:
        emit_json({"bundle": b.hash, "files": list(b.files), "policies": sorted(b.policies)})
    else:
        out.print(f"ok: {len(b.policies)} policies in {len(b.files)} files, bundle {b.hash}")


@policy_app.command("test")
def run_cases(directory: Dir, as_json: Json = False) -> None:
    """Run the bundle's YAML cases (tests/*.yaml); exit 1 when any case fails."""
    b = _load(directory)
    report = run_tests(b, directory)
    if as_json:
        emit_json({"cases": len(report.results), "failed": [r.describe() for r in report.failed]})
    else:
        for r in report.results:
            mark = "[green]pass[/green]" if r.ok else "[red]FAIL[/red]"
            out.print(f"{mark} {r.file}: {r.name}", highlight=False)
            if not r.ok:
                out.print(f"     {r.describe()}", highlight=False)
        out.print(f"{len(report.results) - len(report.failed)}/{len(report.results)} cases pass")
    if report.failed or not report.results:
        raise typer.Exit(1)


@policy_app.command("explain")
def explain(
    directory: Dir,
    case: Annotated[Path, typer.Option("--case", help="A YAML file holding one case (the format of tests/*.yaml).")],
    as_json: Json = False,
) -> None:
    """Print why a request is decided as it is: the slice evaluated and the deciding policies."""
    b = _load(directory)
    doc = yaml.safe_load(case.read_text())
    c = doc["cases"][0] if isinstance(doc, dict) and "cases" in doc else doc
    d = decide_case(b, c)
    slice_ids = b.slice_ids(c["action"], c["resource"]["type"], None, str(c["resource"].get("id", "r1")))
    if as_json:
        emit_json(
            {
                "effect": d.effect.value,
                "policy_ids": list(d.policy_ids),
                "reasons": list(d.reasons),
                "approver": d.approver,
                "lifted": list(d.lifted),
                "evaluated": slice_ids,
                "bundle": b.hash,
            }
        )
        return
    out.print(f"[bold]{d.effect.value}[/bold]  (bundle {b.hash})")
    for pid, why in zip(d.policy_ids, d.reasons, strict=False):
        where = f" — {b.policies[pid].file}:{b.policies[pid].line}" if pid in b.policies else " — enforced in code"
        out.print(f"  {pid}: {why}{where}", highlight=False)
    if d.approver:
        out.print(f"  approver: {d.approver}")
    out.print(f"evaluated {len(slice_ids)} of {len(b.policies)} policies: {', '.join(slice_ids)}", highlight=False)


@policy_app.command("replay")
def replay(
    bundle_dir: Annotated[Path, typer.Option("--bundle", help="Candidate bundle directory.")],
    since: Annotated[str | None, typer.Option(help="Only decisions at or after this RFC 3339 time.")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Re-decide recorded requests under a candidate bundle; report every decision that would change."""
    from tether.audit.log import content_key
    from tether.audit.query import read_content
    from tether.crypto import load_master_key
    from tether.policy.replay import replay_decisions

    candidate = _load(bundle_dir)
    with services(data_dir) as svc:
        key = content_key(load_master_key(svc.settings, create=False))
        changes, total = replay_decisions(
            svc.db, svc.policy, candidate, content=lambda eid: read_content(svc.db, key, eid), since=since
        )
    if as_json:
        emit_json({"replayed": total, "changed": changes})
        return
    for c in changes:
        line = f"{c['ts']} {c['event_id']} {c['action']} on {c['resource']}: {c['was']} → [bold]{c['now']}[/bold]"
        out.print(f"{line} {c['policy_ids']}", highlight=False)
    out.print(f"{len(changes)} of {total} recorded decisions would change")
    if total == 0:
        err.print("no recorded decisions with a stored decision input were found")


_ = (fail, json)
