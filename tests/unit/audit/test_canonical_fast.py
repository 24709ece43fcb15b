"""The audit chain's event bodies: canonical JSON by the fast path only where it equals RFC 8785's.

`canonical_fast` itself (the chain re-exports tether.canon's) is pinned in tests/unit/test_canon.py.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_canon import values
from tether.audit.chain import canonical_fast, event_id
from tether.audit.model import Event
from tether.canon import canonical


def test_event_body_is_canonical() -> None:
    """A full event body, with nested resource and detail, matches the reference."""
    e = Event(
        type="tool.requested", resource={"type": "m", "id": "é\x01😀"}, detail={"z": [1, None, "\u2028"], "a": {}}
    )
    body = e.body(seq=1, event_id="evt_x", ts="2026-01-01T00:00:00.000000Z", prev_hash="0" * 64)
    assert canonical_fast(body) == canonical(body)


def test_event_ids_have_the_shared_form() -> None:
    """Audit event ids look like tether.types.new_id("evt"): prefix and 26 base32 characters."""
    assert all(re.fullmatch(r"evt_[0-9a-hjkmnp-tv-z]{26}", event_id()) for _ in range(200))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), values, max_size=4),
    st.none() | st.dictionaries(st.text(max_size=6), values, max_size=3),
    st.lists(st.text(max_size=5), max_size=3),
)
def test_event_fast_path_is_taken_only_when_identical(detail: dict, resource: dict | None, policies: list) -> None:  # type: ignore[type-arg]
    """When the writer uses orjson for an event body, the bytes equal RFC 8785's."""
    import orjson

    from tether.audit.chain import _event_plain

    e = Event(type="x.y", detail=detail, resource=resource, policy_ids=tuple(policies))
    body = e.body(seq=7, event_id=event_id(), ts="2026-01-01T00:00:00.000000Z", prev_hash="0" * 64)
    if _event_plain(e):
        assert orjson.dumps(body, option=orjson.OPT_SORT_KEYS) == canonical(body)
