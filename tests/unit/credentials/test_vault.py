"""The credential vault: envelope encryption at rest, master-key rotation, subject tokens, masked secrets."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tether.credentials import CredentialInvalid, CredentialNotFound, Secret, Vault
from tether.crypto import SecretUnreadable
from tether.store.credentials import SqlCredentialStore
from tether.store.db import Database
from tether.store.migrate import upgrade
from tether.store.schema.audit import audit_events
from tether.store.schema.credentials import credentials, subject_tokens


@pytest.fixture
def db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    upgrade(url)
    return Database(url)


def vault(db: Database, key: bytes | None = None) -> Vault:
    return Vault(SqlCredentialStore(db), key or secrets.token_bytes(32))


def test_secrets_are_sealed_at_rest_and_open_again(db: Database) -> None:
    """The stored row holds neither the secret nor the data key in clear; the vault opens it."""
    canary = "canary-" + secrets.token_urlsafe(20)
    v = vault(db)
    v.add("per_admin", "crm", "bearer", {"token": canary})
    with db.read() as conn:
        row = conn.execute(select(credentials)).one()
        audit = conn.execute(select(audit_events.c.body)).all()
    assert canary.encode() not in bytes(row.secret_sealed) + bytes(row.data_key_wrapped)
    assert canary not in str(row) + str(audit)
    info, fields = vault(db, v._master).open("crm")
    assert fields["token"].reveal() == canary
    assert info.kind.value == "bearer"


def test_a_wrong_master_key_cannot_open_a_secret(db: Database) -> None:
    """Another master key fails authentication instead of returning garbage."""
    vault(db).add("a", "crm", "api_key", {"key": "k" * 20})
    with pytest.raises(SecretUnreadable):
        vault(db).open("crm")


def test_a_row_swapped_onto_another_name_does_not_open(db: Database) -> None:
    """Blobs are bound to their row id (AES-GCM aad): copying one row's blobs onto another fails."""
    v = vault(db)
    v.add("a", "one", "bearer", {"token": "t" * 20})
    v.add("a", "two", "bearer", {"token": "u" * 20})
    with db.write() as conn:
        one = conn.execute(select(credentials).where(credentials.c.name == "one")).one()
        conn.execute(credentials.update().where(credentials.c.name == "two").values(
            secret_sealed=one.secret_sealed, data_key_wrapped=one.data_key_wrapped))  # fmt: skip
    with pytest.raises(SecretUnreadable):
        vault(db, v._master).open("two")


def test_rotation_rewraps_data_keys_and_the_old_key_no_longer_opens_them(db: Database) -> None:
    """After rotate_master every credential opens under the new key only; secrets were not re-encrypted."""
    old = secrets.token_bytes(32)
    v = vault(db, old)
    v.add("a", "crm", "bearer", {"token": "t" * 24})
    v.keep_subject_token("tsk_1", "per_1", "subject-token-value", datetime.now(UTC) + timedelta(hours=1))
    with db.read() as conn:
        sealed_before = conn.execute(select(credentials.c.secret_sealed)).scalar_one()
    new = secrets.token_bytes(32)
    assert v.rotate_master(new) == 2
    with db.read() as conn:
        sealed_after = conn.execute(select(credentials.c.secret_sealed)).scalar_one()
    assert sealed_before == sealed_after
    assert vault(db, new).open("crm")[1]["token"].reveal() == "t" * 24
    assert vault(db, new).subject_token("tsk_1") is not None
    with pytest.raises(SecretUnreadable):
        vault(db, old).open("crm")


def test_ending_a_task_destroys_its_subject_token(db: Database) -> None:
    """end_task deletes the sealed subject token and tells providers to drop cached upstream tokens."""
    v = vault(db)
    dropped: list[str] = []
    v.on_change(dropped.append)
    v.keep_subject_token("tsk_9", "per_1", "subject", datetime.now(UTC) + timedelta(hours=1))
    person, token = v.subject_token("tsk_9")  # type: ignore[misc]
    assert (person, token.reveal()) == ("per_1", "subject")
    v.end_task("tsk_9")
    assert v.subject_token("tsk_9") is None
    with db.read() as conn:
        assert conn.execute(select(subject_tokens)).all() == []
    assert dropped == ["task:tsk_9"]


def test_an_expired_subject_token_is_not_used(db: Database) -> None:
    """A subject token past its task's expiry is destroyed on first touch."""
    v = vault(db)
    v.keep_subject_token("tsk_2", "per_1", "subject", datetime.now(UTC) - timedelta(seconds=1))
    assert v.subject_token("tsk_2") is None
    assert v.sweep() == 0


def test_secret_values_never_print() -> None:
    """repr, str and f-strings of a Secret show a mask."""
    s = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + repr({"k": s})


@pytest.mark.parametrize(
    ("kind", "secret", "config"),
    [("bearer", {}, {}), ("bearer", {"token": "x", "extra": "y"}, {}), ("api_key", {"key": "k"}, {"nope": 1}),
     ("client_credentials", {"client_secret": "s"}, {"client_id": "c"}),
     ("obo", {"client_secret": "s"}, {"client_id": "c", "token_url": "http://attacker.example/token"})],
)  # fmt: skip
def test_malformed_credentials_are_refused(
    db: Database, kind: str, secret: dict[str, str], config: dict[str, object]
) -> None:
    """Missing or extra secret fields, unknown settings, no token URL, or a plain-http token URL: refused."""
    with pytest.raises(CredentialInvalid):
        vault(db).add("a", "x", kind, secret, config)


def test_errors_name_the_credential_but_not_its_secret(db: Database) -> None:
    """Refusals say what is wrong without echoing a secret value."""
    canary = "canary-" + secrets.token_urlsafe(16)
    with pytest.raises(CredentialInvalid) as e:
        vault(db).add("a", "x", "bearer", {"token": canary, "oops": canary})
    assert canary not in str(e.value) + str(e.value.problem())
    with pytest.raises(CredentialNotFound):
        vault(db).open("missing")


def test_derived_keys_are_the_hmac_of_their_purpose_and_stay_what_they_were() -> None:
    """A deployment's sealed blobs must open after an upgrade: every derivation keeps its label and formula."""
    import hashlib
    import hmac

    from tether import crypto

    master = bytes(range(32))
    labels = {
        crypto.TOKENS_SIGNING_KEY: b"tether/tokens/signing-key",
        crypto.AUDIT_SIGNING_KEY: b"tether/audit/signing-key",
        crypto.AUDIT_DIGEST_KEY: b"tether/audit/digest",
        crypto.AUDIT_CONTENT_KEY: b"tether/audit/content",
        crypto.APPROVALS_PROMPT_KEY: b"tether/approvals/prompt",
        crypto.MCP_SESSION_KEY: b"tether/mcp/session",
    }
    keys = {purpose: crypto.derive_key(master, purpose) for purpose in labels}
    for purpose, label in labels.items():
        assert keys[purpose] == hmac.new(master, label, hashlib.sha256).digest()
    assert len(set(keys.values())) == len(keys)  # no two purposes share a key
    assert crypto.derive_key(bytes(32), crypto.AUDIT_CONTENT_KEY) != keys[crypto.AUDIT_CONTENT_KEY]


def test_rotation_reseals_every_blob_sealed_under_a_derived_key() -> None:
    from tether import crypto
    from tether.store.credentials import DERIVED_SEALS

    resealed = {purpose for *_, purpose in DERIVED_SEALS}
    # the digest key only makes HMACs and the session key signs session ids: nothing is sealed under them
    sealing = {
        crypto.TOKENS_SIGNING_KEY, crypto.AUDIT_SIGNING_KEY, crypto.AUDIT_CONTENT_KEY, crypto.APPROVALS_PROMPT_KEY,
    }  # fmt: skip
    assert resealed == sealing
