"""Tether's signing keys: Ed25519, stored in the database so every process shares them.

The private part is sealed under the master key (AAD = kid). Rotation makes a new key the
signer; the old one stays published (and accepted) until the last token it can have signed
has expired: `publish_until = retired_at + MAX_TOKEN_LIFETIME + margin`. A rotation writes
a `keyring` revocation row so the watchers of other processes reload the key ring at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tether.audit.model import Event
from tether.config import MAX_TOKEN_LIFETIME
from tether.crypto import seal, unseal
from tether.errors import Unavailable
from tether.tokens.jose import VerifyKey, b64e, sign_eddsa, verify_key_from_jwk
from tether.tokens.ports import KeyRow, TokenStore
from tether.types import utcnow

#: a retired key stays published this long past the longest token lifetime (clock skew, stale signers)
PUBLISH_MARGIN = timedelta(seconds=120)
ALG = "EdDSA"


def _thumbprint(x: str) -> str:
    import hashlib
    import json

    raw = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True).encode()
    return b64e(hashlib.sha256(raw).digest())


class KeyRing:
    """The published verification keys and the current signer, reloaded from the store."""

    def __init__(self, store: TokenStore, master_key: bytes, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self._master = master_key
        self.clock = clock
        self._lock = threading.Lock()
        #: kid → key; replaced wholesale on reload so readers never see a half-built map
        self.verify_keys: dict[str, VerifyKey] = {}
        self._published: list[dict[str, Any]] = []
        self._signer: tuple[str, ed25519.Ed25519PrivateKey] | None = None
        self._last_reload = 0.0

    # ------------------------------------------------------------ lifecycle

    def ensure(self) -> None:
        """Create the first signing key when there is none (on `tether init` / first start)."""
        self.reload()
        if self._signer is not None:
            return
        with self.store.write() as repo:
            if not any(k.retired_at is None for k in repo.keys()):  # noqa: SIM118 — a repository method
                repo.insert_key(self._new_key(self.clock()))
                repo.record([Event(type="keys.created", detail={"reason": "first signing key"})])
        self.reload()

    def rotate(self, actor: str = "system") -> str:
        """A new signer now; the old keys stay published until their tokens have expired."""
        now = self.clock()
        row = self._new_key(now)
        with self.store.write() as repo:
            old = repo.retire_keys(now, now + timedelta(seconds=MAX_TOKEN_LIFETIME) + PUBLISH_MARGIN)
            repo.insert_key(row)
            repo.add_revocation("keyring", row.kid, "keys.rotated", now)
            repo.record([Event(type="keys.rotated", actor=actor, detail={"kid": row.kid, "retired": old})])
        self.reload()
        return row.kid

    def reload(self) -> None:
        with self.store.read() as repo:
            rows = repo.keys()
        now = self.clock()
        published = [r for r in rows if r.publish_until is None or r.publish_until > now]
        verify = {r.kid: verify_key_from_jwk(r.public_jwk) for r in published}
        active = [r for r in published if r.retired_at is None]
        signer = None
        if active:
            newest = max(active, key=lambda r: r.created_at)
            raw = unseal(self._master, newest.private_sealed, newest.kid.encode())
            signer = (newest.kid, ed25519.Ed25519PrivateKey.from_private_bytes(raw))
        with self._lock:
            self.verify_keys = verify
            self._published = [dict(r.public_jwk) for r in published]
            self._signer = signer
            self._last_reload = time.monotonic()

    def reload_for_unknown_kid(self) -> bool:
        """A kid we do not know may be another process's new key: reload, at most once a second."""
        if time.monotonic() - self._last_reload < 1.0:
            return False
        self.reload()
        return True

    # --------------------------------------------------------------- using

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._published)}

    def ready(self) -> bool:
        return self._signer is not None

    @property
    def active_kid(self) -> str | None:
        return self._signer[0] if self._signer else None

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        signer = self._signer
        if signer is None:
            raise Unavailable("no signing key: run `tether init`")
        return sign_eddsa(signer[1], signer[0], claims, typ)

    def _new_key(self, now: datetime) -> KeyRow:
        private = ed25519.Ed25519PrivateKey.generate()
        x = b64e(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        kid = _thumbprint(x)
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALG, "use": "sig"}
        return KeyRow(kid, ALG, jwk, seal(self._master, raw, kid.encode()), now, None, None)


__all__ = ["ALG", "PUBLISH_MARGIN", "KeyRing"]
