"""Appending to the one global chain, inside a caller's write transaction.

`hash = SHA-256(prev_hash_hex_bytes || RFC 8785 JSON of the record without hash)`.
Writers are serialised by the store: SQLite's `BEGIN IMMEDIATE` write lock, or on
PostgreSQL a transaction-scoped advisory lock taken here. Under that lock the head is
read once per batch, so `seq` is gap-free across processes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, select, text

from tether.audit import keys
from tether.audit.model import GENESIS_HASH, Event, Record
from tether.canon import canonical, canonical_fast, orjson_is_canonical
from tether.entropy import random_bytes
from tether.store.db import CHAIN_LOCK_KEY  # the chain sequencer's advisory lock on PostgreSQL
from tether.store.schema.audit import audit_events
from tether.types import encode_id, rfc3339, utcnow


def event_id() -> str:
    """`evt_` + 26 characters of tether.types.new_id's alphabet: 50 bits of milliseconds, then 80 random bits.

    Time first, so ids sort by creation and the unique index on them grows at its right edge: with fully
    random ids every event of a batch lands on another leaf page, and each page costs a WAL write.
    """
    return "evt_" + encode_id((time.time_ns() // 1_000_000) << 80 | int.from_bytes(random_bytes(10), "big"))


_SCALAR_FIELDS = ("type", "actor", "task_id", "trace_id", "parent_id", "agent_id", "person_id", "sponsor_id", "action",
                  "decision", "approval_id", "request_digest", "prompt_digest", "id", "ts")  # fmt: skip


def _event_plain(ev: Event) -> bool:
    """`orjson_is_canonical` for an event's body, checking only what a caller can vary (the rest is typed by
    Event.body)."""
    for name in _SCALAR_FIELDS:
        v = getattr(ev, name)
        if v is not None and type(v) is not str:
            return False
    for x in ev.policy_ids:
        if type(x) is not str:
            return False
    return (
        (ev.resource is None or orjson_is_canonical(ev.resource))
        and (ev.outcome is None or orjson_is_canonical(ev.outcome))
        and orjson_is_canonical(ev.detail)
    )


def _encode(ev: Event, body: dict[str, Any]) -> bytes:
    """The RFC 8785 bytes of `ev`'s `body`: orjson where that is provably the same, else the reference."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS) if _event_plain(ev) else canonical(body)


def encodable(ev: Event) -> bool:
    """Whether `ev` can be chained: its body has canonical JSON (no lone surrogates, no foreign types)."""
    try:
        _encode(ev, ev.body(seq=1, event_id=ev.id or "evt_x", ts=ev.ts or "", prev_hash=GENESIS_HASH))
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def chain_hash(prev_hash: str, body_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + body_bytes).hexdigest()


def head(conn: Connection) -> tuple[int, str]:
    """The (seq, hash) at the head of the chain; (0, 64 zeros) when it is empty."""
    row = conn.execute(
        select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def lock_chain(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CHAIN_LOCK_KEY})


def append(conn: Connection, events: Sequence[Event]) -> list[Record]:
    """Chain and insert `events` in the caller's write transaction; durable when it commits.

    Events without a `ts` get the batch's append time (one clock read per batch).
    """
    if not events:
        return []
    lock_chain(conn)
    seq, prev = head(conn)
    records, rows = _link(events, seq, prev)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(_INSERT.format(marks=", ".join([mark] * _WIDTH)), rows)  # one prepared executemany
    keys.catch_up(conn)  # a rare path (the CLI without a server, recovery): it leaves no tail behind
    return records


def append_raw(
    cur: Any, *, postgres: bool, events: Sequence[Event], content: Mapping[str, bytes] | None = None
) -> list[Record]:
    """`append` on a DB-API cursor inside a write transaction the caller opened (the audit writer's path).

    `content`: sealed content by event id, stored in the events' own rows (outside the hashed body)."""
    if not events:
        return []
    if postgres:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK_KEY,))
    cur.execute(_HEAD)
    row = cur.fetchone()
    seq, prev = (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))
    records, rows = _link(events, seq, prev, content)
    if postgres:
        cur.executemany(_INSERT.format(marks=", ".join(["%s"] * _WIDTH)), rows)  # psycopg pipelines these
    else:
        insert_rows(cur, _INSERT_HEAD, _WIDTH, rows)
    return records


_INSERT_HEAD = (
    "INSERT INTO audit_events (seq, id, ts, type, task_id, agent_id, person_id, body, prev_hash, hash, content) VALUES "
)
_WIDTH = 11


def insert_rows(cur: Any, head_sql: str, width: int, rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` on SQLite with few multi-row INSERTs.

    Each statement releases and re-takes the GIL once, where `executemany` does so per row; under a busy
    event loop every re-take can wait a full switch interval. Up to EXACT_ROWS rows go in one statement
    of their exact size (a call's few events: one INSERT); larger batches in chunks of powers of two, so
    the statements SQLite prepares stay few (sqlite3 caches 128).
    """
    marks = "(" + ", ".join(["?"] * width) + ")"
    i, n = 0, len(rows)
    while i < n:
        left = n - i
        size = left if left <= EXACT_ROWS else 1 << min(left.bit_length() - 1, 8)  # ≤ 256 rows × 11 columns
        chunk = rows[i : i + size]
        cur.execute(head_sql + ", ".join([marks] * size), [v for r in chunk for v in r])
        i += size


#: batches up to this many rows are inserted by one statement of their own size
EXACT_ROWS = 16


def _link(
    events: Sequence[Event], seq: int, prev: str, content: Mapping[str, bytes] | None = None
) -> tuple[list[Record], list[tuple[Any, ...]]]:
    """Records and table rows for `events` chained after (`seq`, `prev`), with their sealed `content` by id."""
    records: list[Record] = []
    rows: list[tuple[Any, ...]] = []
    now = rfc3339(utcnow())
    sha256 = hashlib.sha256
    for ev in events:
        seq += 1
        eid = ev.id or event_id()
        ts = ev.ts or now
        body = ev.body(seq=seq, event_id=eid, ts=ts, prev_hash=prev)
        body_bytes = _encode(ev, body)
        h = sha256(prev.encode("ascii") + body_bytes).hexdigest()
        text_body = body_bytes.decode("utf-8")
        records.append(Record(seq, eid, ts, ev.type, text_body, prev, h))
        rows.append((seq, eid, ts, ev.type, ev.task_id, ev.agent_id, ev.person_id, text_body, prev, h,
                     content.get(eid) if content else None))  # fmt: skip
        prev = h
    return records, rows


_HEAD = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"
_INSERT = _INSERT_HEAD + "({marks})"


__all__ = [
    "CHAIN_LOCK_KEY", "append", "append_raw", "canonical_fast", "chain_hash", "encodable", "event_id", "head",
    "insert_rows",
    "lock_chain",
]  # fmt: skip
