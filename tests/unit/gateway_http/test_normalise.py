"""Path normalisation: what is decided is exactly what is forwarded."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.gateway.http.normalise import (
    _QSAFE,
    SAFE,
    PathRefused,
    encode_path,
    encode_query,
    normalise_path,
    parse_query,
)


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        ("/v1.0/me/messages", ("v1.0", "me", "messages")),
        ("//v1.0///me/", ("v1.0", "me")),
        ("/v1.0/./me/x/../messages", ("v1.0", "me", "messages")),
        ("/v1.0/me/%2e%2e/users/bob", ("v1.0", "users", "bob")),
        ("/v1.0/me/%2E/messages", ("v1.0", "me", "messages")),
        ("/v1.0/users/alice%40contoso.example", ("v1.0", "users", "alice@contoso.example")),
        ("/v1.0/me/drive/root:/Q3%20plan.docx:/content", ("v1.0", "me", "drive", "root:", "Q3 plan.docx:", "content")),
    ],
)
def test_paths_normalise_to_their_segments(raw: str, segments: tuple[str, ...]) -> None:
    """Duplicate slashes, dot segments (also percent-encoded) and escapes resolve to plain segments."""
    assert normalise_path(raw) == segments


@pytest.mark.parametrize(
    "raw",
    ["/a/%2f/b", "/a/%2F..", "/a;b/c", "/a/%3bb", "/a/%252e%252e", "/a/%5c", "/a\\b", "/a/%00", "/a/%0a",
     "/../a", "/a/../../b", "/a/%ff", "relative", "/a b", "/a/\u00e9"],
)  # fmt: skip
def test_encoding_tricks_are_refused(raw: str) -> None:
    """Encoded slashes, path parameters, double encoding, backslashes, controls, escapes above root: refused."""
    with pytest.raises(PathRefused):
        normalise_path(raw)


@given(st.lists(st.text(min_size=1, max_size=8).filter(lambda s: s not in (".", "..")), min_size=1, max_size=6))
def test_encoding_then_normalising_is_the_identity_or_a_refusal(segments: list[str]) -> None:
    """Any segments, encoded for forwarding, normalise back to themselves, or are refused as a whole."""
    try:
        back = normalise_path(encode_path(tuple(segments)))
    except PathRefused:
        assert any(set(s) & set("/\\%;") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in s) for s in segments)
        return
    assert back == tuple(segments)


def test_queries_are_sorted_and_reencoded_stably() -> None:
    """The query is decided in sorted order and forwarded as decided."""
    pairs = parse_query("$top=5&$filter=subject%20eq%20'a%26b'&a=")
    assert pairs == [("$filter", "subject eq 'a&b'"), ("$top", "5"), ("a", "")]
    assert parse_query(encode_query(pairs)) == pairs


@given(st.lists(st.text(max_size=8) | st.sampled_from(["v1.0", "alice@contoso.example", "$top", "a+b", "x/y"])))
def test_encoding_is_quote_with_the_safe_sets(texts: list[str]) -> None:
    """Plain segments and query parts skip `quote`, and come out exactly as `quote` writes them."""
    assert encode_path(tuple(texts)) == "/" + "/".join(quote(s, safe=SAFE) for s in texts)
    pairs = list(zip(texts, reversed(texts), strict=True))
    assert encode_query(pairs) == "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QSAFE)}" for k, v in pairs)
