"""The audit chain's fast canonical JSON is byte-identical to the RFC 8785 reference for every value."""

from __future__ import annotations

import re

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.audit.chain import canonical_fast, event_id
from tether.audit.model import Event
from tether.canon import canonical

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_fast_canonical_equals_the_reference(value: object) -> None:
    """Any JSON value (floats, non-ASCII keys, control characters, astral code points) hashes the same bytes."""
    assert canonical_fast(value) == canonical(value)


def test_event_body_is_canonical() -> None:
    """A full event body, with nested resource and detail, matches the reference."""
    e = Event(
        type="tool.requested", resource={"type": "m", "id": "é\x01😀"}, detail={"z": [1, None, "\u2028"], "a": {}}
    )
    body = e.body(seq=1, event_id="evt_x", ts="2026-01-01T00:00:00.000000Z", prev_hash="0" * 64)
    assert canonical_fast(body) == canonical(body)


def test_out_of_range_integer_is_refused_like_the_reference() -> None:
    """Integers beyond 2^53 are not silently serialised: the reference refuses them."""
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_fast({"n": 2**60})


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
