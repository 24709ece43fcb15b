"""Path and query normalisation: what is decided is exactly what is forwarded.

The raw request target is split on `/` BEFORE percent-decoding, so an encoded slash
(`%2f`) can never create a segment; each segment is decoded once and refused when it holds
a slash, a backslash, a `%` (double encoding), a `;` (path parameters), a control
character or invalid UTF-8. Then `.`/`..` segments are resolved (refused if they climb
above the root) and empty segments (duplicate slashes) dropped. The result is matched
against the route map (literal segments case-insensitively, as Graph does) and re-encoded
for forwarding, so no encoding trick reaches an unmapped or different route.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from tether.errors import InvalidRequest

MAX_PATH = 4096
MAX_QUERY = 8192
#: outside printable ASCII, or a backslash or `;` even before decoding
_RAW_BAD = re.compile(r"[^\x21-\x7e]|[\\;]")
_BAD = frozenset("/\\%;") | {chr(c) for c in range(0x20)} | {"\x7f"}
#: characters left unescaped in forwarded segments (RFC 3986 pchar minus the ones we refuse)
SAFE = "!$&'()*+,=:@-._~"
_QSAFE = "!$'()*,:@-._~/"
#: text that `quote` with those safe sets returns unchanged (its own always-safe letters, digits and `_.-~`, and the
#: safe set): answered without calling it
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_.~!$&'()*+,=:@-]*").fullmatch
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~$-]*").fullmatch
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.~!$'()*,:@/-]*").fullmatch


class PathRefused(InvalidRequest):
    code, title = "path_refused", "Request path refused"


def normalise_path(raw: str) -> tuple[str, ...]:
    """The decoded segments of a raw (still percent-encoded) path, or PathRefused."""
    if len(raw) > MAX_PATH:
        raise PathRefused("the path is too long")
    if not raw.startswith("/"):
        raise PathRefused("the path must be absolute")
    if _RAW_BAD.search(raw):
        raise PathRefused("the raw path holds characters that must be percent-encoded, a backslash or a ';'")
    out: list[str] = []
    for seg in raw.split("/"):
        if "%" in seg:
            try:
                text = unquote_to_bytes(seg).decode("utf-8", errors="strict")
            except UnicodeDecodeError:
                raise PathRefused("a path segment is not valid UTF-8") from None
            if _BAD.intersection(text):
                raise PathRefused("a path segment holds an encoded slash, backslash, '%', ';' or a control character")
        else:
            text = seg
        if text in ("", "."):
            continue
        if text == "..":
            if not out:
                raise PathRefused("the path climbs above the root")
            out.pop()
            continue
        out.append(text)
    return tuple(out)


def encode_path(segments: tuple[str, ...]) -> str:
    return "/" + "/".join(s if _PLAIN_SEGMENT(s) else quote(s, safe=SAFE) for s in segments)


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Query pairs in a stable order (sorted), refusing oversized or malformed queries."""
    if len(raw) > MAX_QUERY:
        raise PathRefused("the query is too long")
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=100)
    except (ValueError, UnicodeDecodeError):
        raise PathRefused("the query is malformed") from None
    return sorted(pairs)


def encode_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(
        f"{k if _PLAIN_KEY(k) else quote(k, safe='$')}={v if _PLAIN_VALUE(v) else quote(v, safe=_QSAFE)}"
        for k, v in pairs
    )


__all__ = ["PathRefused", "encode_path", "encode_query", "normalise_path", "parse_query"]
