"""`tether mcp stdio`: a local MCP client (the official SDK, as Claude Desktop would) starts the
relay as its stdio server; the relay authenticates as the agent with its key file, exchanges
the person's delegation token for a task token, and relays to /mcp."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.mcp_world import ACTIONS, World, build_world
from tests.tokens_world import new_key

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    yield from build_world(tmp_path, db_url)


async def test_claude_desktop_style_client_reaches_tools_through_the_relay(world: World, tmp_path: Path) -> None:
    """The relay obtains a task token with the agent's key and the person's delegation token, then relays."""
    await world.pin_all()
    ident = world.services.identity
    key = new_key()
    agent = ident.create_agent("system", name="Desktop", sponsor_id=world.sponsor, owner_team="platform",
                               purpose="local assistant", ceiling=ACTIONS, jwks={"keys": [key.public]})  # fmt: skip
    dlg = ident.delegate("system", person_id=world.person, agent_id=agent.id, actions=["git:read", "mcp:call"])
    assert world.services.tokens is not None
    person_token = world.services.tokens.mint_delegation_token(world.person, dlg.id)
    key_file = tmp_path / "agent.jwk.json"
    key_file.write_text(json.dumps({**key.private_jwk, "agent_id": agent.id}))
    tether = str(Path(sys.executable).parent / "tether")
    params = StdioServerParameters(
        command=tether, args=["mcp", "stdio", "--url", world.base, "--key-file", str(key_file), "--scope", "git:read"],
        env={"TETHER_SUBJECT_TOKEN": person_token},
    )  # fmt: skip
    async with stdio_client(params) as (read, write), ClientSession(read, write, read_timeout_seconds=30) as s:
        init = await s.initialize()
        assert init.server_info.name == "tether-mcp-gateway"
        names = {t.name for t in (await s.list_tools()).tools}
        assert "git__git_status" in names
        assert "git__git_commit" not in names  # git:write was not asked for
        result = await s.call_tool("git__git_status", {"repo_path": str(world.repo)})
        assert not result.is_error
    decided = world.events("policy.decided")
    assert decided[-1]["agent_id"] == agent.id
    assert decided[-1]["person_id"] == world.person
