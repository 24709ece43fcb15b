"""Signed checkpoints of the chain head: truncation and wholesale rewrites become detectable.

Every `checkpoint_every` events (or `checkpoint_seconds`, whichever first) the head
`(seq, hash)` is signed: a compact JWS (EdDSA, Ed25519) over the RFC 8785 JSON of
`{chain_id, seq, hash, ts}`. It is stored in `audit_checkpoints` and appended to
`<data_dir>/checkpoints.jsonl` (fsync'd), and optionally POSTed to a webhook, so the head
is anchored outside the database. The signing key is generated once; its private half is
sealed (AES-GCM) under a key derived from the master key, with the key id and public key as
associated data, so a database writer can neither read it nor swap in a key of their own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from tether.audit import chain
from tether.audit.model import Receipt
from tether.canon import canonical
from tether.crypto import AUDIT_SIGNING_KEY, SecretUnreadable, derive_key, seal, unseal
from tether.errors import TetherError
from tether.log import get_logger
from tether.store.db import Database
from tether.store.schema.audit import audit_checkpoints, audit_keys
from tether.types import new_id, rfc3339, utcnow

log = get_logger("tether.audit.checkpoints")

JWS_TYP = "tether-audit-checkpoint+jws"
FILE_NAME = "checkpoints.jsonl"


class AuditKeyTampered(TetherError):
    code, status, title = "audit_key_tampered", 500, "The audit signing key row fails authentication"


def signing_secret(master_key: bytes) -> bytes:
    """The AES key sealing the audit signing key (HMAC of the master key, like other contexts)."""
    return derive_key(master_key, AUDIT_SIGNING_KEY)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class AuditKey:
    kid: str
    chain_id: str
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None = None

    @property
    def public_b64(self) -> str:
        return _b64u(self.public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.public_b64, "kid": self.kid, "alg": "EdDSA"}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain_id: str
    seq: int
    hash: str
    ts: str
    kid: str
    jws: str

    def as_dict(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "seq": self.seq, "hash": self.hash, "ts": self.ts, "kid": self.kid,
                "jws": self.jws}  # fmt: skip


def _aad(kid: str, chain_id: str, public_b64: str) -> bytes:
    """The key id (as master-key rotation re-seals by row id); the public key is checked against the private one."""
    return kid.encode()


def load_key(db: Database, secret: bytes, *, create: bool = True) -> AuditKey | None:
    """The audit signing key, created once; raises AuditKeyTampered if its row fails authentication."""
    with db.read() as conn:
        row = conn.execute(select(audit_keys).order_by(audit_keys.c.created_at).limit(1)).first()
    if row is None:
        if not create:
            return None
        private = Ed25519PrivateKey.generate()
        kid, chain_id = new_id("key"), new_id("chn")
        pub = _b64u(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        raw = private.private_bytes_raw()
        with contextlib.suppress(IntegrityError, TetherError), db.write() as conn:
            if conn.execute(select(audit_keys.c.kid).limit(1)).first() is None:
                conn.execute(
                    insert(audit_keys).values(
                        kid=kid, chain_id=chain_id, public_key=pub,
                        sealed_private=seal(secret, raw, _aad(kid, chain_id, pub)), created_at=rfc3339(utcnow()),
                    )
                )  # fmt: skip
        return load_key(db, secret, create=False)
    kid, chain_id, pub = str(row.kid), str(row.chain_id), str(row.public_key)
    try:
        raw = unseal(secret, bytes(row.sealed_private), _aad(kid, chain_id, pub))
    except SecretUnreadable as exc:
        raise AuditKeyTampered("the audit key row was altered or sealed under another master key") from exc
    private = Ed25519PrivateKey.from_private_bytes(raw)
    if _b64u(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) != pub:
        raise AuditKeyTampered("the audit public key does not match its private key")
    return AuditKey(kid, chain_id, private.public_key(), private)


def sign(key: AuditKey, seq: int, head_hash: str, ts: str) -> str:
    if key.private is None:
        raise ValueError("this audit key cannot sign")
    header = _b64u(canonical({"alg": "EdDSA", "kid": key.kid, "typ": JWS_TYP}))
    payload = _b64u(canonical({"chain_id": key.chain_id, "seq": seq, "hash": head_hash, "ts": ts}))
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64u(key.private.sign(signing_input))}"


def verify_jws(key: AuditKey, jws: str) -> dict[str, Any] | None:
    """The payload of a checkpoint JWS signed by `key`, or None when forged or malformed."""
    try:
        header_b64, payload_b64, sig_b64 = jws.split(".")
        header = json.loads(_unb64u(header_b64))
        if header.get("alg") != "EdDSA" or header.get("kid") != key.kid:
            return None
        key.public.verify(_unb64u(sig_b64), f"{header_b64}.{payload_b64}".encode("ascii"))
        payload: dict[str, Any] = json.loads(_unb64u(payload_b64))
    except (ValueError, InvalidSignature, UnicodeError):
        return None
    if payload.get("chain_id") != key.chain_id or not isinstance(payload.get("seq"), int):
        return None
    return payload


def read_file(path: Path) -> Iterator[dict[str, Any]]:
    """Checkpoints from the external JSON Lines file (streamed); a malformed line yields {}."""
    if not path.exists():
        return
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = {}
                yield doc if isinstance(doc, dict) else {}


def list_checkpoints(db: Database, *, after: int = 0, limit: int = 100) -> list[Checkpoint]:
    with db.read() as conn:
        rows = conn.execute(
            select(audit_checkpoints)
            .where(audit_checkpoints.c.seq > after)
            .order_by(audit_checkpoints.c.seq)
            .limit(limit)
        ).all()
    return [Checkpoint(r.chain_id, int(r.seq), r.hash, r.ts, r.kid, r.jws) for r in rows]


class Checkpointer:
    """Signs the head every N events (fed by AuditLog.listeners) or every T seconds (own thread)."""

    def __init__(
        self, db: Database, key: AuditKey, *, every: int, seconds: float, path: Path | None = None,
        webhook: str | None = None,
    ) -> None:  # fmt: skip
        self.db, self.key, self.every, self.seconds = db, key, every, seconds
        self.path, self.webhook = path, webhook
        self._since = 0
        self._last_seq = self._latest_seq()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _latest_seq(self) -> int:
        with self.db.read() as conn:
            row = conn.execute(
                select(audit_checkpoints.c.seq).order_by(audit_checkpoints.c.seq.desc()).limit(1)
            ).first()
        return 0 if row is None else int(row[0])

    def on_commit(self, receipts: list[Receipt]) -> None:
        """AuditLog listener (writer thread): count, and wake the signer every N events."""
        self._since += len(receipts)
        if self._since >= self.every:
            self._since = 0
            self._wake.set()

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head now (if it moved since the last checkpoint)."""
        with self._lock:
            with self.db.read() as conn:
                seq, head_hash = chain.head(conn)
            if seq == 0 or seq <= self._last_seq:
                return None
            ts = rfc3339(utcnow())
            cp = Checkpoint(self.key.chain_id, seq, head_hash, ts, self.key.kid, sign(self.key, seq, head_hash, ts))
            try:
                with self.db.write() as conn:
                    conn.execute(insert(audit_checkpoints).values(**{k: v for k, v in cp.as_dict().items()}))
            except TetherError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
                self._last_seq = max(self._last_seq, self._latest_seq())  # another process signed it
                return None
            self._last_seq = seq
            if self.path is not None:
                self._append_file(cp)
            if self.webhook:
                threading.Thread(target=self._post, args=(cp,), daemon=True).start()
            return cp

    def _append_file(self, cp: Checkpoint) -> None:
        assert self.path is not None
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(cp.as_dict(), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _post(self, cp: Checkpoint) -> None:
        assert self.webhook is not None
        req = urllib.request.Request(  # noqa: S310 — the operator configures this URL
            self.webhook, data=json.dumps(cp.as_dict()).encode(), headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5):  # noqa: S310
                pass
        except OSError as exc:
            log.warning("checkpoint webhook failed", error=repr(exc))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.checkpoint()
            except Exception as exc:  # noqa: BLE001 — keep signing later; verification reports gaps
                log.error("checkpoint failed", error=repr(exc))

    async def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tether-audit-checkpoints", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        import asyncio

        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(10)
            self._thread = None
            with contextlib.suppress(Exception):
                self.checkpoint()


__all__ = [
    "FILE_NAME", "AuditKey", "AuditKeyTampered", "Checkpoint", "Checkpointer", "list_checkpoints", "load_key",
    "read_file", "sign", "signing_secret", "verify_jws",
]  # fmt: skip
