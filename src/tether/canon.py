"""RFC 8785 (JCS) canonical JSON and the digests built on it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import rfc8785


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value."""
    return bytes(rfc8785.dumps(value))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`."""
    return sha256_hex(canonical(value))


def keyed_digest(key: bytes, data: bytes) -> str:
    """HMAC-SHA-256 (hex): for personal data, where a plain hash of short text would leak it."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


__all__ = ["canonical", "digest", "keyed_digest", "sha256_hex"]
