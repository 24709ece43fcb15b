"""The foundation CLI on both backends: init prints the admin token once, person/agent --json, keygen round-trip."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from tether.cli.main import app
from tether.store.schema.identity import admin_tokens

runner = CliRunner()


def _run(env: dict[str, str], *args: str) -> str:
    r = runner.invoke(app, list(args), env=env)
    assert r.exit_code == 0, r.output
    return r.output


def test_init_prints_token_once_and_stores_only_its_hash(tmp_path: Path, db_url: str) -> None:
    """`tether init --json` prints {"admin_token": …}; the database holds its hash; a second init prints none."""
    env = {"TETHER_DATA_DIR": str(tmp_path / "d"), "TETHER_DATABASE_URL": db_url}
    token = json.loads(_run(env, "init", "--json"))["admin_token"]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        hashes = [r.token_hash for r in conn.execute(select(admin_tokens.c.token_hash))]
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM admin_tokens")))
    engine.dispose()
    assert len(hashes) == 1
    assert token not in dump
    second = _run(env, "init", "--json")
    assert token not in second
    assert "tth_" not in second


def test_person_agent_json_and_keygen_round_trip(tmp_path: Path, db_url: str) -> None:
    """keygen writes a 0600 private JWK, registers its public key (shown by agent show), no private key in the DB."""
    env = {"TETHER_DATA_DIR": str(tmp_path / "d"), "TETHER_DATABASE_URL": db_url}
    _run(env, "init", "--json")
    p = json.loads(_run(env, "person", "add", "alice@example.com", "--name", "Alice",
                        "--entitlements", "mail:read,mail:send", "--json"))  # fmt: skip
    assert p["email"] == "alice@example.com"
    assert any(x["id"] == p["id"] for x in json.loads(_run(env, "person", "list", "--json")))
    a = json.loads(_run(env, "agent", "add", "bot", "--sponsor", p["id"], "--owner-team", "it",
                        "--purpose", "mail triage", "--ceiling", "mail:read", "--json"))  # fmt: skip
    out = tmp_path / "bot.jwk"
    _run(env, "agent", "keygen", a["id"], "--out", str(out), "--json")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    private = json.loads(out.read_text())
    assert private["crv"] == "Ed25519"
    assert "d" in private
    shown = json.loads(_run(env, "agent", "show", a["id"], "--json"))
    xs = [k["x"] for k in shown["jwks"]["keys"]]
    assert private["x"] in xs
    assert all("d" not in k for k in shown["jwks"]["keys"])
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT jwks FROM agents")).all()
    engine.dispose()
    assert private["d"] not in " ".join(str(r[0]) for r in rows)
    assert json.loads(_run(env, "agent", "suspend", a["id"], "--json"))["status"] == "suspended"
    assert json.loads(_run(env, "agent", "resume", a["id"], "--json"))["status"] == "active"
    dep = json.loads(_run(env, "person", "deprovision", p["id"], "--json"))
    assert dep["person"]["status"] == "deprovisioned"
    assert dep["agents"] == [{"id": a["id"], "status": "suspended"}]
    assert json.loads(_run(env, "agent", "show", a["id"], "--json"))["status"] == "suspended"
