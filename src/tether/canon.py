"""RFC 8785 (JCS) canonical JSON and the digests built on it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import rfc8785

#: integers RFC 8785 writes as they are (it serialises numbers as IEEE doubles)
_SAFE_INT = 2**53 - 1


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value (the reference implementation)."""
    return bytes(rfc8785.dumps(value))


def canonical_fast(value: Any) -> bytes:
    """`canonical(value)`, byte for byte: by orjson with sorted keys where that is provably the same, else by it.

    They agree on strings (only `"`, `\\` and C0 controls escaped, short forms where JSON has them,
    lower-case `\\u00xx`, everything else as UTF-8), null, booleans, integers within ±(2^53 − 1), arrays
    and objects whose keys are ASCII (byte order is then RFC 8785's UTF-16 order). Floats, larger
    integers, non-ASCII keys, subclasses of these types and what orjson refuses (lone surrogates) go to
    the reference, which answers (or raises) as it always did. A property test pins the equality.
    """
    if orjson_is_canonical(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return canonical(value)


def orjson_is_canonical(value: Any, depth: int = 0) -> bool:
    """Whether orjson with sorted keys writes `value` as RFC 8785 does (see `canonical_fast`)."""
    if depth > 100:  # the reference decides what deep nesting gives
        return False
    t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                return False
            tv = type(v)
            if tv is str or tv is bool or v is None:
                continue
            if not orjson_is_canonical(v, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        return all(orjson_is_canonical(v, depth + 1) for v in value)
    return False


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`."""
    return sha256_hex(canonical_fast(value))


def keyed_digest(key: bytes, data: bytes) -> str:
    """HMAC-SHA-256 (hex): for personal data, where a plain hash of short text would leak it."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


__all__ = ["canonical", "canonical_fast", "digest", "keyed_digest", "orjson_is_canonical", "sha256_hex"]
