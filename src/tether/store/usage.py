"""Per-task usage counters in the database: the ledger every server process adds to.

The audit writer adds committed deltas with `add_usage` (inside the commit that finds a count due,
or in a transaction of its own), and the totals it returns are the whole service's, not one
process's. Each row carries a stamp (`updated_seq`): the audit seq the count was made at, raised
past every earlier stamp so stamps only rise across processes. A process can then ask for the rows
other processes changed since it last looked (`changed_since`) and never mistake an older reading
for a newer one. `load_usage` reads one task the first time a process sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from tether.store.db import CHAIN_LOCK_KEY, Database
from tether.store.schema.gateway import task_usage

#: the counters, in column order (policies read them as `context.task.usage.<name>`)
COUNTERS = ("items", "bytes", "calls", "external_recipients")

#: a task's totals as of one audit seq
Totals = tuple[int, dict[str, int]]

_COLUMNS = "task_id, " + ", ".join(COUNTERS) + ", updated_seq"
_TOP = "SELECT max(updated_seq) FROM task_usage"
_UPDATE = ", ".join(f"{c} = task_usage.{c} + excluded.{c}" for c in COUNTERS) + ", updated_seq = excluded.updated_seq"


def zero() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def _totals(row: Sequence[Any]) -> Totals:
    return int(row[-1]), dict(zip(COUNTERS, map(int, row[-1 - len(COUNTERS) : -1]), strict=True))


def add_usage(cur: Any, *, postgres: bool, seq: int, deltas: Mapping[str, Mapping[str, int]]) -> dict[str, Totals]:
    """Add `deltas` (task → counter → amount) committed up to audit `seq`; each task's new totals.

    The rows are stamped with `seq`, or with one past the newest stamp if that is higher: stamps only
    ever rise, so a process polling for rows stamped above the newest it has seen misses no change.
    (Counts run apart from the commits they count: a count stamped with an older batch's seq after a
    newer batch was counted would fall below the pollers' mark and go unseen.) On PostgreSQL the count
    takes the chain's advisory lock, so stamps are taken and committed one count at a time, as on
    SQLite under its write lock.
    """
    if not deltas:
        return {}
    if postgres:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK_KEY,))
    cur.execute(_TOP)
    top = cur.fetchone()
    seq = max(seq, int(top[0] or 0) + 1 if top is not None else 1)
    mark = "%s" if postgres else "?"
    row = "(" + ", ".join([mark] * (2 + len(COUNTERS))) + ")"
    tasks = sorted(deltas)
    params: list[Any] = []
    for task in tasks:
        d = deltas[task]
        params.append(task)
        params.extend(int(d.get(c, 0)) for c in COUNTERS)
        params.append(seq)
    # Only constants and placeholders are formatted in: the values are bound parameters.
    sql = (
        f"INSERT INTO task_usage ({_COLUMNS}) VALUES {', '.join([row] * len(tasks))} "  # noqa: S608
        f"ON CONFLICT (task_id) DO UPDATE SET {_UPDATE} RETURNING {_COLUMNS}"
    )
    cur.execute(sql, params)
    return {r[0]: _totals(r) for r in cur.fetchall()}


def load_usage(db: Database, task_id: str) -> Totals:
    """A task's committed totals (zero at seq 0 for a task nothing was counted for yet)."""
    t = task_usage.c
    with db.read() as conn:
        row = conn.execute(select(*(t[c] for c in COUNTERS), t.updated_seq).where(t.task_id == task_id)).first()
    return (0, zero()) if row is None else _totals(tuple(row))


def changed_since(db: Database, seq: int, *, limit: int = 5000) -> list[tuple[str, Totals]]:
    """Rows changed by batches after audit `seq`, oldest change first."""
    t = task_usage.c
    with db.read() as conn:
        rows = conn.execute(
            select(t.task_id, *(t[c] for c in COUNTERS), t.updated_seq)
            .where(t.updated_seq > seq)
            .order_by(t.updated_seq)
            .limit(limit)
        ).all()
    out = [(r[0], _totals(tuple(r))) for r in rows]
    if len(out) >= limit:  # a page ends mid-batch maybe: leave that batch's rows for the next call, whole
        last = out[-1][1][0]
        out = [r for r in out if r[1][0] < last] or out
    return out


def head_seq(db: Database) -> int:
    """The newest change's seq (0 when no usage was counted yet)."""
    with db.read() as conn:
        return int(conn.execute(select(func.coalesce(func.max(task_usage.c.updated_seq), 0))).scalar_one())


def merge(deltas: Sequence[tuple[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """(task, counters) pairs summed per task."""
    out: dict[str, dict[str, int]] = {}
    for task, d in deltas:
        acc = out.setdefault(task, zero())
        for k, v in d.items():
            acc[k] = acc.get(k, 0) + int(v)
    return out


__all__ = ["COUNTERS", "Totals", "add_usage", "changed_since", "head_seq", "load_usage", "merge", "zero"]
