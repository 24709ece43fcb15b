"""`tether mcp servers|tools|pin|unpin` on a local data directory, against a real mcp-server-git."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.mcp_world import GIT, git_repo
from tether.cli.main import app

runner = CliRunner()


def test_operator_reviews_pins_and_unpins_tools(tmp_path: Path) -> None:
    """Tools start unpinned; pinning one approves exactly its current definition; unknown tools are refused."""
    repo = git_repo(tmp_path / "repo")
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"mcp": {"servers": {"git": {"command": GIT, "args": ["--repository", str(repo)]}}}}))
    env = {"TETHER_GATEWAY_CONFIG": str(cfg)}
    d = str(tmp_path / "data")
    assert runner.invoke(app, ["init", "--data-dir", d, "--json"], env=env).exit_code == 0
    r = runner.invoke(app, ["mcp", "servers", "--data-dir", d, "--json"], env=env)
    assert json.loads(r.output)[0]["name"] == "git"
    r = runner.invoke(app, ["mcp", "tools", "git", "--data-dir", d, "--json"], env=env)
    assert r.exit_code == 0, r.output
    tools = {t["tool"]: t for t in json.loads(r.output)}
    assert tools["git_status"]["status"] == "unpinned"
    r = runner.invoke(app, ["mcp", "pin", "git", "git_status", "--data-dir", d, "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert [p["tool"] for p in json.loads(r.output)] == ["git_status"]
    r = runner.invoke(app, ["mcp", "tools", "git", "--data-dir", d, "--json"], env=env)
    after = {t["tool"]: t for t in json.loads(r.output)}
    assert after["git_status"]["status"] == "pinned"
    assert after["git_status"]["pinned"] == tools["git_status"]["pin"]
    assert after["git_commit"]["status"] == "unpinned"
    assert runner.invoke(app, ["mcp", "pin", "git", "no_such_tool", "--data-dir", d], env=env).exit_code != 0
    assert runner.invoke(app, ["mcp", "unpin", "git", "git_status", "--data-dir", d], env=env).exit_code == 0
    assert runner.invoke(app, ["mcp", "unpin", "git", "git_status", "--data-dir", d], env=env).exit_code != 0
