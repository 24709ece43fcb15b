"""`tether delegate --token`, `tether task list|show|end` and `tether keys rotate|list` on a local data directory."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.tokens_world import assertion, make_world, request
from tether.api.wiring import build_services
from tether.cli.main import app
from tether.config import Settings

runner = CliRunner()


def test_cli_delegation_token_task_lifecycle_and_key_rotation(tmp_path: Path) -> None:
    """A delegation token from the CLI is exchangeable; the task shows and ends; rotation keeps the old kid."""
    d = str(tmp_path / "data")
    assert runner.invoke(app, ["init", "--data-dir", d, "--json"]).exit_code == 0
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        w = make_world(svc)
        r = runner.invoke(app, ["delegate", "--person", w.person, "--agent", w.agent_a, "--actions", "mail:read",
                                "--days", "3", "--token", "--data-dir", d, "--json"])  # fmt: skip
        assert r.exit_code == 0, r.output
        dtoken = json.loads(r.output)["delegation_token"]
        assert svc.tokens is not None
        ca = assertion(w.agent_a, w.key_a, svc.settings.issuer)
        grant = svc.tokens.exchange(request(w, dtoken, client_assertion=ca, task_purpose="cli test"))
        assert grant["scope"] == "mail:read"
        task_id = grant["task_id"]
    finally:
        svc.close()
    r = runner.invoke(app, ["task", "list", "--data-dir", d, "--json"])
    assert [t["id"] for t in json.loads(r.output)] == [task_id]
    r = runner.invoke(app, ["task", "show", task_id, "--data-dir", d, "--json"])
    assert json.loads(r.output)["purpose"] == "cli test"
    r = runner.invoke(app, ["task", "end", task_id, "--reason", "operator stop", "--data-dir", d])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["task", "list", "--status", "ended", "--data-dir", d, "--json"])
    assert json.loads(r.output)[0]["end_reason"] == "operator stop"
    assert runner.invoke(app, ["task", "end", task_id, "--data-dir", d]).exit_code == 2
    before = json.loads(runner.invoke(app, ["keys", "list", "--data-dir", d, "--json"]).output)
    r = runner.invoke(app, ["keys", "rotate", "--data-dir", d, "--json"])
    assert r.exit_code == 0, r.output
    rotated = json.loads(r.output)
    assert rotated["previous_kid"] == before["active_kid"]
    assert set(rotated["published"]) == {before["active_kid"], rotated["active_kid"]}
