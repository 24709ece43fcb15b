"""The MCP gateway's JSON on the hot path: orjson, with the standard library for what orjson refuses."""

from __future__ import annotations

import json
import math

import pytest

from tether.gateway.mcp.wire import dumps, loads

BIG = 2**70  # past orjson's 64-bit integers


def test_requests_and_results_keep_integers_past_64_bits() -> None:
    doc = {"arguments": {"n": BIG, "text": "é"}}
    assert json.loads(dumps(doc)) == doc


def test_results_are_compact_utf8() -> None:
    assert dumps({"a": ["é", 1, None]}) == '{"a":["é",1,null]}'.encode()


def test_answers_orjson_refuses_are_read_by_the_standard_parser() -> None:
    assert loads(b'{"result": {"n": ' + str(BIG).encode() + b"}}")["result"]["n"] == BIG
    assert math.isnan(loads(b'{"result": {"x": NaN}}')["result"]["x"])
    assert loads(b'{"t": "\\ud800"}')["t"] == "\ud800"


def test_text_that_is_not_unicode_still_fails_to_encode() -> None:
    """A lone surrogate cannot be sent on or recorded: the gateway's caller turns this into an error."""
    with pytest.raises(UnicodeEncodeError):
        dumps({"t": "\ud800"})


def test_a_broken_answer_is_still_an_error() -> None:
    with pytest.raises(json.JSONDecodeError):  # a ValueError, which the lean client reports as unavailable
        loads(b'{"result": ')
