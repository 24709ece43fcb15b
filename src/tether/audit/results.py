"""The ids of tool results: a call's `tool.completed` event id, derived from its decision's, naming its task.

A gateway hands the client this id with the result (MCP `_meta["io.tether/event"]`) before the lazy record
that carries it is committed, and a later call of the task names it as its parent (ARCHITECTURE §6). The id
is an `evt_` id like any other — 50 bits of milliseconds, then 80 — whose milliseconds and next 40 bits are
those of the call's `policy.decided` event, and whose last 40 bits are an HMAC of the task and those under a
key every process of the deployment derives from the master key. So:

- any process checks a parent at once (`names_result_of`), with no state and no database read;
- nobody without the key names a result of another task, or makes one up;
- start-up recovery, which finds an allowed decision with no outcome after a crash (the lazy record was lost
  with the process), writes the outcome "unknown" under the very id the client was given (`result_id`), so a
  hop that names it still leads to an event in the log.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from tether.crypto import MCP_SESSION_KEY, derive_key
from tether.entropy import random_bytes
from tether.types import decode_id, encode_id

_MASK40 = (1 << 40) - 1

#: (task id, decision event id) → the id of that call's tool.completed
ResultNamer = Callable[[str, str], str]


def result_id(key: bytes, task_id: str, decision_id: str) -> str:
    """The id of the `tool.completed` event of the call `decision_id` (its `policy.decided` event) decided.

    A decision id that is not an `evt_` id (none is: `chain.event_id` mints them) gets the current time and
    40 random bits instead: still an id of the task, though no recovery could name it again."""
    n = decode_id(decision_id[4:]) if decision_id.startswith("evt_") else None
    if n is None:
        ms, nonce = time.time_ns() // 1_000_000, int.from_bytes(random_bytes(5), "big")
    else:
        ms, nonce = n >> 80, n >> 40 & _MASK40
    return "evt_" + encode_id(ms << 80 | nonce << 40 | _tag(key, task_id, ms, nonce))


def names_result_of(key: bytes, task_id: str, event_id: object) -> bool:
    """Whether `event_id` is the id of a tool result given to the task `task_id` (under `key`)."""
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        return False
    n = decode_id(event_id[4:])
    if n is None:
        return False
    ms, nonce, tag = n >> 80, n >> 40 & _MASK40, n & _MASK40
    return hmac.compare_digest(tag.to_bytes(5, "big"), _tag(key, task_id, ms, nonce).to_bytes(5, "big"))


def namer(master_key: bytes) -> ResultNamer:
    """`result_id` under the deployment's key (the one the MCP gateway derives for its sessions)."""
    key = derive_key(master_key, MCP_SESSION_KEY)
    return lambda task_id, decision_id: result_id(key, task_id, decision_id)


def _tag(key: bytes, task_id: str, ms: int, nonce: int) -> int:
    msg = b"io.tether/event|%s|%d|%d" % (task_id.encode(), ms, nonce)
    return int.from_bytes(hmac.new(key, msg, "sha256").digest()[:5], "big")


__all__ = ["ResultNamer", "namer", "names_result_of", "result_id"]
