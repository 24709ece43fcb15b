"""The master key and authenticated encryption (AES-256-GCM) for secrets at rest.

The master key comes from `TETHER_MASTER_KEY` (base64 of 32 bytes) or from the key file
`<data_dir>/master.key`, created with mode 0600 on first use. Contexts that keep secrets
(signing keys, the credential vault, the audit content store) seal them with `seal` under
a data key; `tether.credentials` adds envelope encryption and master-key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.config import Settings
from tether.entropy import random_bytes
from tether.errors import TetherError

NONCE = 12
VERSION = b"\x01"


class SecretUnreadable(TetherError):
    code, status, title = "secret_unreadable", 500, "A sealed secret could not be opened"


def master_key_path(settings: Settings) -> Path:
    return settings.data_dir / "master.key"


def load_master_key(settings: Settings, *, create: bool = True) -> bytes:
    """The 32-byte master key: from the setting, else the key file (created 0600 if absent)."""
    if settings.master_key is not None:
        raw = base64.b64decode(settings.master_key.get_secret_value(), validate=True)
        if len(raw) != 32:
            raise ValueError("TETHER_MASTER_KEY must be base64 of exactly 32 bytes")
        return raw
    path = master_key_path(settings)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path} must not be readable by group or others (mode {mode:o}); chmod 600 it")
        raw = base64.b64decode(path.read_text().strip(), validate=True)
        if len(raw) != 32:
            raise ValueError(f"{path} does not hold base64 of 32 bytes")
        return raw
    if not create:
        raise FileNotFoundError(f"no master key at {path} and TETHER_MASTER_KEY is not set")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(raw).decode() + "\n")
    return raw


#: The purposes of keys derived from the master key (each the HMAC label of its derivation). Blobs
#: sealed under one of them are re-sealed by `tether credentials rotate-master` (store.credentials).
TOKENS_SIGNING_KEY = "tether/tokens/signing-key"
AUDIT_SIGNING_KEY = "tether/audit/signing-key"
AUDIT_DIGEST_KEY = "tether/audit/digest"
AUDIT_CONTENT_KEY = "tether/audit/content"
APPROVALS_PROMPT_KEY = "tether/approvals/prompt"
MCP_SESSION_KEY = "tether/mcp/session"
MASTER_KID = "tether/credentials/kid"


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """The 32-byte key for `purpose`: HMAC-SHA-256 of the purpose's label under the master key.

    One key per purpose, none usable for another; rotating the master key changes them all.
    """
    return hmac.new(master_key, purpose.encode(), hashlib.sha256).digest()


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """version ‖ nonce ‖ AES-256-GCM(plaintext) — `aad` binds the blob to its purpose/row."""
    nonce = random_bytes(NONCE)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    if len(blob) < 1 + NONCE + 16 or blob[:1] != VERSION:
        raise SecretUnreadable("sealed blob is malformed or of an unknown version")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + NONCE], blob[1 + NONCE :], aad)
    except InvalidTag as exc:
        raise SecretUnreadable("sealed blob failed authentication (wrong key or tampered)") from exc


__all__ = [
    "APPROVALS_PROMPT_KEY", "AUDIT_CONTENT_KEY", "AUDIT_DIGEST_KEY", "AUDIT_SIGNING_KEY", "MASTER_KID",
    "MCP_SESSION_KEY", "TOKENS_SIGNING_KEY", "SecretUnreadable", "derive_key", "load_master_key", "master_key_path",
    "seal", "unseal",
]  # fmt: skip
