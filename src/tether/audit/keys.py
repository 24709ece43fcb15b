"""The chain's lookup keys (`audit_event_keys`): written in batches, a little behind the chain.

A durable append writes every page it touches to the WAL and syncs it. Indexes by task, agent,
person and type on the chain table itself made each call's commit touch one leaf page per index
(three per call for `type`, whose values interleave; one per task for `task_id`) on top of the
chain's own right edge: about half of the pages of a commit, more under load, where each batch
holds many tasks. So the chain table keeps only its `seq` and `id` keys and the lookups live in
`audit_event_keys`, filled from the chain by `catch_up` — by the audit writer, inside one of its
commits every `KEYS_EVERY` seconds or `KEYS_DUE` events, and by every other (rare, synchronous)
append. The keys are derived data: they are rebuilt from the chain, never trusted over it.

Readers see the whole chain at once: rows up to the last keyed `seq` are found through the keys,
rows after it (the *tail*, at most a fraction of a second of events while the writer runs) by a
scan of the chain from there, which its primary key makes a short range read (`select_keyed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.sql.elements import ColumnElement

from tether.store.schema.audit import audit_event_keys, audit_events

#: rows keyed by one catch-up at most (the writer's; a synchronous append keys the whole tail)
KEYS_BATCH = 4096
#: the audit writer keys the tail with its next commit once this many events wait, or this much time passed
KEYS_DUE = 2048
KEYS_EVERY = 0.5
#: what may be looked up through the keys
KEYED = ("task_id", "agent_id", "person_id", "type")

_CATCH_UP = (
    "INSERT INTO audit_event_keys (seq, type, task_id, agent_id, person_id) "
    "SELECT seq, type, task_id, agent_id, person_id FROM audit_events "
    "WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM audit_event_keys) ORDER BY seq LIMIT {limit}"
)


def catch_up_raw(cur: Any, limit: int = KEYS_BATCH) -> int:
    """Key up to `limit` chain rows not keyed yet, in the caller's write transaction (a DB-API cursor,
    holding the chain's lock): how many were keyed."""
    cur.execute(_CATCH_UP.format(limit=int(limit)))
    return max(int(cur.rowcount), 0)


def catch_up(conn: Connection, limit: int | None = None) -> int:
    """`catch_up_raw` on a SQLAlchemy connection in a write transaction; `limit` None: the whole tail."""
    total = 0
    while True:
        n = max(int(conn.exec_driver_sql(_CATCH_UP.format(limit=int(limit or KEYS_BATCH))).rowcount), 0)
        total += n
        if limit is not None or n < KEYS_BATCH:
            return total


def _conditions(cols: Any, where: Mapping[str, str | Sequence[str]]) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for name, value in where.items():
        if name not in KEYED:
            raise ValueError(f"{name} is not a key of the chain")
        col = cols[name]
        out.append(col == value if isinstance(value, str) else col.in_(list(value)))
    return out


def _mark(conn: Connection) -> int:
    """The last keyed seq: rows after it are the tail."""
    return int(conn.execute(select(func.coalesce(func.max(audit_event_keys.c.seq), 0))).scalar_one())


def select_keyed(
    conn: Connection,
    columns: Sequence[Any],
    where: Mapping[str, str | Sequence[str]],
    *,
    after: int = 0,
    also: Sequence[ColumnElement[bool]] = (),
    limit: int | None = None,
    descending: bool = False,
) -> list[Any]:
    """`columns` of the chain's rows whose keys match `where` (a value, or a list of values), after `after`,
    that also satisfy `also` (conditions on `audit_events`), in chain order (`descending`: newest first)."""
    e, k = audit_events.c, audit_event_keys.c
    if not where:
        q = select(*columns).where(e.seq > after, *also)
        q = q.order_by(e.seq.desc() if descending else e.seq)
        return list(conn.execute(q.limit(limit) if limit is not None else q))
    mark = _mark(conn)
    keyed = (
        select(*columns)
        .select_from(audit_event_keys.join(audit_events, e.seq == k.seq))
        .where(k.seq > after, k.seq <= mark, *_conditions(k, where), *also)
        .order_by(k.seq.desc() if descending else k.seq)
    )
    tail = (
        select(*columns)
        .where(e.seq > max(after, mark), *_conditions(e, where), *also)
        .order_by(e.seq.desc() if descending else e.seq)
    )
    rows: list[Any] = []
    for q in (tail, keyed) if descending else (keyed, tail):
        left = None if limit is None else limit - len(rows)
        if left is not None and left <= 0:
            break
        rows.extend(conn.execute(q.limit(left) if left is not None else q))
    return rows


def count_keyed(conn: Connection, where: Mapping[str, str | Sequence[str]]) -> int:
    """How many of the chain's rows match `where`."""
    e, k = audit_events.c, audit_event_keys.c
    mark = _mark(conn)
    keyed = conn.execute(
        select(func.count()).select_from(audit_event_keys).where(k.seq <= mark, *_conditions(k, where))
    )
    tail = conn.execute(select(func.count()).where(e.seq > mark, *_conditions(e, where)))
    return int(keyed.scalar_one()) + int(tail.scalar_one())


__all__ = [
    "KEYED", "KEYS_BATCH", "KEYS_DUE", "KEYS_EVERY", "catch_up", "catch_up_raw", "count_keyed", "select_keyed",
]  # fmt: skip
