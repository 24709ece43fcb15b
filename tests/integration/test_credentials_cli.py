"""`tether credentials add|list|remove|rotate-master` on a real data directory."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from typer.testing import CliRunner

from tether.cli.main import app


def run(data: Path, *args: str, stdin: str | None = None) -> str:
    r = CliRunner().invoke(app, [*args, "--data-dir", str(data)], input=stdin, env={"TETHER_DATABASE_URL": ""})
    assert r.exit_code == 0, r.output
    return r.output


def test_add_list_rotate_remove_never_shows_the_secret(tmp_path: Path) -> None:
    """A sealed credential lists without its secret, survives a master-key rotation, and is removed."""
    data = tmp_path / "d"
    run(data, "init", "--json")
    canary = "canary-" + secrets.token_urlsafe(20)
    out = run(data, "credentials", "add", "crm", "--kind", "api_key", "--header", "X-Key", "--secret-stdin", "--json",
              stdin=canary + "\n")  # fmt: skip
    assert json.loads(out)["config"] == {"header": "X-Key"}
    old_key = (data / "master.key").read_text()
    listing = run(data, "credentials", "list", "--json")
    assert [c["name"] for c in json.loads(listing)] == ["crm"]
    rotated = json.loads(run(data, "credentials", "rotate-master", "--json"))
    assert rotated["rewrapped"]["vault"] == 1
    assert rotated["rewrapped"]["signing_keys"] >= 1
    assert (data / "master.key").read_text() != old_key
    assert (data / "master.key").stat().st_mode & 0o777 == 0o600
    assert not (data / "master.key.new").exists()
    from tether.api.wiring import build_services
    from tether.config import Settings

    svc = build_services(Settings(data_dir=data), migrate=False)  # opens with the new key: tokens and vault
    try:
        assert svc.extras["vault"].open("crm")[1]["key"].reveal() == canary
    finally:
        svc.close()
    db = (data / "tether.db").read_bytes()
    outputs = out + listing + json.dumps(rotated)
    for form in (canary, base64.b64encode(canary.encode()).decode()):
        assert form not in outputs
        assert form.encode() not in db
    assert "Removed" in run(data, "credentials", "remove", "crm")
    assert json.loads(run(data, "credentials", "list", "--json")) == []
