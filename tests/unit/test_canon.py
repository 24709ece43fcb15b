"""tether.canon's fast canonical JSON is byte-identical to the RFC 8785 reference, or raises as it does."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.canon import canonical, canonical_fast, digest, sha256_hex

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(values)
def test_fast_canonical_equals_the_reference(value: object) -> None:
    """Any JSON value (floats, non-ASCII keys, control characters, astral code points): the same bytes."""
    assert canonical_fast(value) == canonical(value)
    assert digest(value) == sha256_hex(canonical(value))


@pytest.mark.parametrize(
    "value",
    [{"k": "\x00\x1f\x7f\u2028\ud7ff\ue000😀\"\\/"}, {"b": 1, "a": [True, None, -(2**53) + 1]}, {"é": 1, "z": 2},
     {"n": 1.5e300}, [1e-7, 0.1, -0.0], {"deep": [[[[{"x": "y"}]]]]}],
)  # fmt: skip
def test_edge_values_equal_the_reference(value: object) -> None:
    assert canonical_fast(value) == canonical(value)


@pytest.mark.parametrize("value", [{"n": 2**60}, {"s": "\ud800"}, {"x": object()}])
def test_what_the_reference_refuses_is_refused(value: object) -> None:
    """Out-of-range integers, lone surrogates, non-JSON values: the reference's own error, not orjson's answer."""
    with pytest.raises(Exception) as fast:  # noqa: PT011 — whatever the reference raises
        canonical_fast(value)
    with pytest.raises(Exception) as ref:  # noqa: PT011
        canonical(value)
    assert type(fast.value) is type(ref.value)


def test_integers_past_2_53_raise_the_reference_error() -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        canonical_fast({"n": 2**60})
