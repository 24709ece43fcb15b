"""`tether approvals …` and `tether breakglass …` against a local data directory."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from tests.approvals_world import make_world, pending
from tether.api.wiring import build_services
from tether.cli.main import app
from tether.config import Settings
from tether.identity.model import Role

runner = CliRunner()


def test_cli_lists_shows_and_approves_as_the_tokens_person(tmp_path):
    """list/show print the request; approve acts as the token's Person; a wrong person is refused."""
    d = str(tmp_path / "data")
    assert runner.invoke(app, ["init", "--data-dir", d, "--json"]).exit_code == 0
    svc = build_services(Settings(data_dir=tmp_path / "data"), migrate=False)
    try:
        w = make_world(svc)
        a = asyncio.run(pending(w))
        sponsor_token = svc.admin_tokens.issue(w.sponsor, Role.APPROVER)
        outsider_token = svc.admin_tokens.issue(w.outsider, Role.APPROVER)
        bg_token = svc.admin_tokens.issue(w.breakglass, Role.BREAKGLASS)
    finally:
        svc.close()
    r = runner.invoke(app, ["approvals", "list", "--data-dir", d, "--json"])
    assert r.exit_code == 0, r.output
    assert [x["id"] for x in json.loads(r.output)] == [a.id]
    r = runner.invoke(app, ["approvals", "show", a.id, "--data-dir", d, "--json"])
    assert json.loads(r.output)["summary"]["subject"] == "Q3 report"
    r = runner.invoke(app, ["approvals", "approve", a.id, "--reason", "ok", "--token", outsider_token, "--data-dir", d])
    assert r.exit_code == 2
    assert "sponsor" in r.output
    r = runner.invoke(app, ["approvals", "approve", a.id, "--reason", "ok", "--token", sponsor_token, "--data-dir", d])
    assert r.exit_code == 0, r.output
    assert "approved" in r.output
    assert w.sponsor in r.output
    r = runner.invoke(app, ["breakglass", "start", "--agent", w.agent, "--justification", "incident 42: mail outage",
                            "--minutes", "5", "--token", bg_token, "--data-dir", d, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    bg_id = json.loads(r.output)["id"]
    r = runner.invoke(app, ["breakglass", "review", bg_id, "--note", "mine", "--token", bg_token, "--data-dir", d])
    assert r.exit_code == 2
    r = runner.invoke(app, ["breakglass", "list", "--open", "--data-dir", d, "--json"])
    assert [x["id"] for x in json.loads(r.output)] == [bg_id]
