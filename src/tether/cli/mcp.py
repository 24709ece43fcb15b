"""`tether mcp …`: the MCP gateway's servers, tool review and pins, and the local stdio relay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli._common import DataDir, Json, emit_json, fail, operator, out, services, settings, table

mcp_app = typer.Typer(help="MCP gateway: upstream servers, tool pins, the stdio relay.", no_args_is_help=True)


def _spec(svc: Any, server: str) -> Any:
    from tether.gateway.mcp import load_config

    cfg = load_config(svc.settings.gateway_config)
    spec = cfg.servers.get(server)
    if spec is None:
        fail(f"no MCP server {server!r} in the gateway config ({svc.settings.gateway_config or 'none set'})")
    return spec


def _headers(svc: Any) -> Any:
    gw = svc.extras.get("mcp_gateway")
    return None if gw is None else gw.pool.headers


@mcp_app.command("servers")
def servers_cmd(data_dir: DataDir = None, as_json: Json = False) -> None:
    """The MCP servers declared in the gateway config."""
    from tether.gateway.mcp import load_config

    cfg = load_config(settings(data_dir).gateway_config)
    rows = [{"name": n, "transport": "stdio" if s.command else "http", "target": s.command or s.url,
             "catalogued_tools": sorted(s.tools)} for n, s in sorted(cfg.servers.items())]  # fmt: skip
    if as_json:
        emit_json(rows)
    else:
        table("MCP servers", ["name", "transport", "target", "catalogued tools"],
              [[r["name"], r["transport"], r["target"], r["catalogued_tools"]] for r in rows])  # fmt: skip


@mcp_app.command("tools")
def tools_cmd(server: str, data_dir: DataDir = None, as_json: Json = False) -> None:
    """Review a server's current tool definitions against their pins (unpinned / pinned / changed)."""
    from tether.gateway.mcp.pins import review
    from tether.store.gateway import SqlPinStore

    with services(data_dir) as svc:
        spec = _spec(svc, server)
        reviews = asyncio.run(review(SqlPinStore(svc.db), spec, _headers(svc)))
    if as_json:
        emit_json([{"tool": r.tool, "status": r.status, "pin": r.pin, "pinned": r.pinned,
                    "definition": r.definition} for r in reviews])  # fmt: skip
        return
    rows = [[r.tool, r.status, r.pin[:16], str(r.definition.get("description") or "")[:100]] for r in reviews]
    table(f"Tools of {server}", ["tool", "status", "pin", "description"], rows)


@mcp_app.command("pin")
def pin_cmd(
    server: str,
    tools: Annotated[list[str] | None, typer.Argument(help="Tools to approve (default: every tool).")] = None,
    data_dir: DataDir = None,
    as_json: Json = False,
) -> None:
    """Approve the current definitions (description, schemas, annotations) of a server's tools."""
    from tether.gateway.mcp.pins import pin_tools
    from tether.store.gateway import SqlPinStore

    with services(data_dir) as svc:
        spec = _spec(svc, server)
        try:
            done = asyncio.run(pin_tools(SqlPinStore(svc.db), spec, tools or None, actor=operator(svc),
                                         headers=_headers(svc)))  # fmt: skip
        except KeyError as exc:
            fail(str(exc.args[0]))
    if as_json:
        emit_json([{"tool": r.tool, "pin": r.pin, "previous": r.pinned} for r in done])
        return
    if not done:
        out.print("Nothing to pin: the current definitions are already approved.")
    for r in done:
        what = "re-pinned (definition changed)" if r.pinned else "pinned"
        out.print(f"{server}/{r.tool}: {what} {r.pin[:16]}…", highlight=False)


@mcp_app.command("unpin")
def unpin_cmd(server: str, tool: str, data_dir: DataDir = None) -> None:
    """Withdraw a tool's approval: the gateway hides and refuses it until it is pinned again."""
    from tether.store.gateway import SqlPinStore

    with services(data_dir) as svc:
        if not SqlPinStore(svc.db).remove(operator(svc), server, tool):
            fail(f"{server}/{tool} is not pinned")
    out.print(f"{server}/{tool}: unpinned")


@mcp_app.command("stdio")
def stdio_cmd(
    key_file: Annotated[Path, typer.Option("--key-file", envvar="TETHER_AGENT_KEY", help="The agent's private JWK.")],
    url: Annotated[str, typer.Option("--url", envvar="TETHER_URL", help="Tether's base URL.")] = "http://127.0.0.1:8700",
    subject_token_file: Annotated[Path | None, typer.Option(
        "--subject-token-file", help="File holding the person's token (e.g. from `tether delegate --token`).")] = None,
    scope: Annotated[str | None, typer.Option(help="Actions to ask for, space-separated.")] = None,
    purpose: Annotated[str | None, typer.Option(help="The task's purpose, recorded with it.")] = None,
    subject_token: Annotated[str | None, typer.Option(envvar="TETHER_SUBJECT_TOKEN", hidden=True)] = None,
) -> None:  # fmt: skip
    """Run as a local MCP stdio server relaying to Tether's /mcp (for Claude Desktop / Claude Code).

    The person's token comes from --subject-token-file or the TETHER_SUBJECT_TOKEN variable.
    """
    from tether.gateway.mcp.relay import Relay, TokenSource
    from tether.sdk import AgentClient

    subject = subject_token_file.read_text().strip() if subject_token_file else subject_token
    if not subject:
        raise typer.BadParameter("no person token: give --subject-token-file or set TETHER_SUBJECT_TOKEN")
    base = url.rstrip("/")
    client = AgentClient(base, key_file)
    tokens = TokenSource(client, subject, resource=f"{base}/mcp", scope=scope, purpose=purpose or "MCP session")
    Relay(f"{base}/mcp", tokens).run()


__all__ = ["mcp_app"]
