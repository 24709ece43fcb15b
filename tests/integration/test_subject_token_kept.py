"""The person's IdP token is sealed for the task at exchange, for on-behalf-of upstream credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.tokens_world import assertion, idp_token, make_world, write_trusted_issuers
from tether.config import Settings
from tether.tokens.jose import unverified_claims
from tether.tokens.model import ASSERTION_TYPE, GRANT_TOKEN_EXCHANGE, JWT_TOKEN_TYPE


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url,
                    trusted_issuers=write_trusted_issuers(tmp_path / "conf"))  # fmt: skip


def test_idp_subject_token_is_kept_sealed_for_its_task_only(live_server, services):
    """After an HTTP exchange the vault holds the subject token for that task and person; raw bytes never in the DB."""
    w = make_world(services)
    subject = idp_token(w.person_subject)
    form = {
        "grant_type": GRANT_TOKEN_EXCHANGE, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(w.agent_a, w.key_a, services.settings.issuer),
        "subject_token": subject, "subject_token_type": JWT_TOKEN_TYPE, "scope": "mail:read",
        "resource": f"{services.settings.base_url}/proxy/m365",
    }  # fmt: skip
    r = httpx.post(live_server.base + "/oauth/token", data=form)
    assert r.status_code == 200, r.text
    _, claims = unverified_claims(r.json()["access_token"])
    vault = services.extras["vault"]
    kept = vault.subject_token(claims["task_id"])
    assert kept is not None
    assert kept[0] == w.person
    assert kept[1].reveal() == subject
    assert vault.subject_token("tsk_other") is None
    db_path = Path(services.settings.url.split("///", 1)[1]) if services.settings.is_sqlite else None
    if db_path is not None:
        services.db.dispose()
        assert subject.encode() not in db_path.read_bytes()
