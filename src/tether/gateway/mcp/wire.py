"""JSON on the MCP gateway's hot path: orjson, and the standard library for what orjson refuses.

orjson refuses integers past 64 bits and text that is not Unicode (a lone surrogate, which JSON can
carry as an escape). Requests and answers are never dropped for their shape: past 64 bits the
standard encoder and parser keep the number; text that is not Unicode still fails to encode
(`UnicodeEncodeError`, a ValueError), since it can be neither recorded nor relayed as UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: json.dumps(separators=(",", ":"), ensure_ascii=False) without building its encoder on every call
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(doc: Any) -> bytes:
    """`doc` as compact UTF-8 JSON. NaN and the infinities become `null` (as JavaScript's
    `JSON.stringify` writes them) on orjson's path, which every document without oversized integers takes."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError
        return _COMPACT.encode(doc).encode()


def loads(data: bytes | str) -> Any:
    """A JSON document: orjson, or the standard parser for what orjson refuses (integers past 64 bits, NaN,
    escaped lone surrogates); malformed JSON raises `json.JSONDecodeError` (a ValueError) either way."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


__all__ = ["dumps", "loads"]
