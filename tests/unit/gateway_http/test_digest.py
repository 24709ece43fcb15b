"""The gateway's fast request digest is byte-for-byte the RFC 8785 digest of architecture §8."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tether.canon import digest
from tether.gateway.http.proxy import request_digest_of

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
docs = st.fixed_dictionaries({
    "task_id": text, "person": text, "actors": st.lists(text, max_size=3), "action": text,
    "resource": st.fixed_dictionaries({"type": text, "id": text, "system": text}), "upstream": text,
    "method": text, "path": text, "query": st.lists(st.lists(text, min_size=2, max_size=2), max_size=4),
    "content_type": text, "body_sha256": text, "n": st.integers(-(2**53) + 1, 2**53 - 1),
})  # fmt: skip


@given(docs)
def test_fast_digest_equals_the_rfc8785_digest(doc: dict[str, object]) -> None:
    """Any strings (controls, quotes, non-ASCII, astral), integers and nesting: same digest as tether.canon."""
    assert request_digest_of(doc) == digest(doc)
