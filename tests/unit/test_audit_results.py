"""The ids of tool results (`tether.audit.results`): derived from the decision, naming the task, unforgeable."""

from __future__ import annotations

from tether.audit.chain import event_id
from tether.audit.results import namer, names_result_of, result_id
from tether.types import decode_id

KEY = b"\x01" * 32


def test_a_result_id_is_the_decisions_time_and_bits_with_a_mac_of_the_task() -> None:
    decision = event_id()
    rid = result_id(KEY, "tsk_a", decision)
    assert rid == result_id(KEY, "tsk_a", decision)  # recovery names it again, byte for byte
    n, d = decode_id(rid[4:]), decode_id(decision[4:])
    assert n is not None
    assert d is not None
    assert n >> 40 == d >> 40  # milliseconds and the first 40 random bits: still time-ordered
    assert rid != decision
    assert names_result_of(KEY, "tsk_a", rid)


def test_a_result_id_names_only_its_own_task_under_its_own_key() -> None:
    decision = event_id()
    rid = result_id(KEY, "tsk_a", decision)
    assert not names_result_of(KEY, "tsk_b", rid)
    assert not names_result_of(b"\x02" * 32, "tsk_a", rid)
    assert result_id(KEY, "tsk_b", decision) != rid
    assert not names_result_of(KEY, "tsk_a", decision)  # the decision event itself is no result
    for changed in range(4, len(rid)):  # any one character altered
        c = "0" if rid[changed] != "0" else "1"
        assert not names_result_of(KEY, "tsk_a", rid[:changed] + c + rid[changed + 1 :])


def test_malformed_ids_name_no_result() -> None:
    for bad in (None, 7, "", "evt_", "evt_short", "tok_" + result_id(KEY, "t", event_id())[4:], "evt_" + "!" * 26):
        assert not names_result_of(KEY, "t", bad)


def test_a_decision_id_that_is_no_event_id_still_gets_a_result_id_of_its_task() -> None:
    rid = result_id(KEY, "tsk_a", "dec_not-an-event")
    assert names_result_of(KEY, "tsk_a", rid)
    assert rid != result_id(KEY, "tsk_a", "dec_not-an-event")  # fresh bits each time: nothing to name again


def test_namer_uses_the_deployments_derived_key() -> None:
    from tether.crypto import MCP_SESSION_KEY, derive_key

    master = b"\x07" * 32
    decision = event_id()
    assert namer(master)("tsk_a", decision) == result_id(derive_key(master, MCP_SESSION_KEY), "tsk_a", decision)
