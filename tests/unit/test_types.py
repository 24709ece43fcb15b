"""Ids and timestamps every event and record carries."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from tether.audit.chain import event_id
from tether.types import ID_ALPHABET, decode_id, encode_id, new_id, rfc3339


def _by_pairs(n: int) -> str:
    """The id encoding spelled out: ten bits at a time, most significant first."""
    pairs = [a + b for a in ID_ALPHABET for b in ID_ALPHABET]
    return "".join(pairs[(n >> s) & 1023] for s in range(120, -10, -10))


@given(st.integers(min_value=0, max_value=2**130 - 1))
def test_ids_encode_130_bits_as_they_always_did(n: int) -> None:
    assert encode_id(n) == _by_pairs(n)


@given(st.integers(min_value=0, max_value=2**130 - 1), st.integers(min_value=0, max_value=2**130 - 1))
def test_encoded_ids_sort_as_their_numbers(a: int, b: int) -> None:
    """Event ids put the time first so they sort by creation: the text must sort as the number does."""
    assert (encode_id(a) < encode_id(b)) == (a < b)


@given(st.integers(min_value=0, max_value=2**130 - 1))
def test_ids_decode_to_their_numbers(n: int) -> None:
    assert decode_id(encode_id(n)) == n


def test_text_that_is_no_id_does_not_decode() -> None:
    good = encode_id(12345)
    for bad in ("", good[:-1], good + "0", good[:-1] + "u", good[:-1] + "I", good.upper()):
        assert decode_id(bad) is None, bad


def test_new_ids_are_random_and_well_formed() -> None:
    ids = {new_id("dec") for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"dec_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)
    # every position varies (no bit of the 130 is stuck)
    assert all(len({i[4 + k] for i in ids}) > 1 for k in range(26))


def test_event_ids_sort_by_creation_time() -> None:
    first = event_id()
    time.sleep(0.002)
    assert event_id() > first


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    east = datetime(2026, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(east) == "2025-12-31T23:30:00.000000Z"
