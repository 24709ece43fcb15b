"""The `tether` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from tether import __version__
from tether.cli import approvals, audit, credentials, identity, mcp, policy, sim, tokens
from tether.cli._common import DataDir, Json, emit_json, out, services, settings
from tether.identity.model import Role
from tether.store.schema.identity import admin_tokens

app = typer.Typer(
    name="tether",
    help="Tether: identity, task-scoped tokens, runtime policy, approvals and audit for AI assistants.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(identity.person_app, name="person")
app.add_typer(identity.agent_app, name="agent")
app.command("delegate")(identity.delegate)
app.add_typer(approvals.approvals_app, name="approvals")
app.add_typer(approvals.breakglass_app, name="breakglass")
app.add_typer(tokens.task_app, name="task")
app.add_typer(tokens.keys_app, name="keys")
app.add_typer(sim.sim_app, name="sim")
app.add_typer(credentials.credentials_app, name="credentials")
app.add_typer(mcp.mcp_app, name="mcp")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(policy.policy_app, name="policy")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"tether {__version__}")
        raise typer.Exit()
    # Operator logs go to stderr, so `--json` output on stdout stays parseable.
    from tether.log import configure

    configure("warning")


@app.command()
def init(
    admin_email: Annotated[str, typer.Option(help="Email of the first administrator.")] = "admin@localhost",
    admin_name: Annotated[str, typer.Option(help="Name of the first administrator.")] = "Tether Administrator",
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Create the database (run migrations), keys, and the first admin token (printed once)."""
    from tether.api.wiring import build_services

    s = settings(data_dir)
    svc = build_services(s, migrate=True)
    try:
        with svc.db.read() as conn:
            has_admin = conn.execute(select(admin_tokens.c.id).limit(1)).first() is not None
        token = None
        if not has_admin:
            admin = svc.identity.find_person(issuer="tether", subject=admin_email)
            if admin is None:
                admin = svc.identity.create_person(
                    "system", email=admin_email, name=admin_name, subject=admin_email,
                    roles=[Role.ADMIN.value, Role.APPROVER.value],
                )  # fmt: skip
            token = svc.admin_tokens.issue(admin.id, Role.ADMIN, "created by tether init")
    finally:
        svc.close()
    if as_json:
        emit_json({"admin_token": token, "data_dir": str(s.data_dir)})
    elif token:
        out.print(f"Initialised Tether in {s.data_dir}")
        out.print("Admin token (shown once; only its hash is stored):")
        out.print(token, highlight=False, soft_wrap=True)
    else:
        out.print(f"Tether in {s.data_dir} is up to date (an admin token exists already).")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8700).")] = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes sharing the port and the database.")
    ] = 1,
) -> None:
    """Run the server: admin API, OAuth, gateways and console. Runs migrations first."""
    import uvicorn

    from tether.api.app import create_app
    from tether.api.wiring import build_services
    from tether.log import configure

    s = settings(data_dir, host=host, port=port)
    configure(s.log_level)
    if workers > 1:
        from tether.api.workers import serve_workers

        serve_workers(s, {"data_dir": data_dir, "host": host, "port": port}, workers)
        return
    from tether.api.http_protocol import HttpProtocol

    svc = build_services(s, migrate=True)
    try:
        uvicorn.run(
            create_app(svc), host=s.host, port=s.port, log_level="warning", access_log=False,
            loop="uvloop", http=HttpProtocol, timeout_graceful_shutdown=5,
        )  # fmt: skip
    finally:
        svc.close()


@app.command()
def quickstart(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8700,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Demo data directory.")] = Path(".tether-demo"),
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up the demo and exit.")] = False,
    sim_port: Annotated[int | None, typer.Option(help="Port of the Microsoft 365 simulator (default port+1).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes (see `tether serve`).")] = 1,
) -> None:
    """A working demo: a small organisation, its agents and delegations, then the server on :8700."""
    from tether.cli.quickstart import run

    run(data_dir=data_dir, port=port, serve=not no_serve, sim_port=sim_port, workers=workers)


@config_app.command("show")
def config_show(data_dir: DataDir = None, as_json: Json = False) -> None:
    """Print the effective settings, secrets masked."""
    masked = settings(data_dir).masked()
    if as_json:
        emit_json(masked)
    else:
        for k, v in masked.items():
            out.print(f"[bold]{k}[/bold] = {json.dumps(v)}", highlight=False)


def main() -> None:
    app()


__all__ = ["app", "main"]

_ = services  # re-exported for subcommand modules
