"""The chain's lookup keys are written in batches behind it; every reader still sees the whole chain.

On SQLite and PostgreSQL (`db_url`): events the writer has committed but not keyed yet (the tail) are
found by task, agent, person and type exactly as keyed ones are, once each, in chain order, across the
boundary and in pages; a commit keys the tail only when it is due; a synchronous append leaves no tail;
the migration keys the events a database already holds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

import tether.audit.log as audit_log
from tether.audit import chain, keys
from tether.audit.log import AuditLog
from tether.audit.model import Event
from tether.audit.query import query
from tether.console.queries import event_counts, timeline
from tether.store.db import Database
from tether.store.migrate import upgrade
from tether.store.schema.audit import audit_event_keys, audit_events


def _keyed(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_event_keys)).scalar_one())


def _event(i: int) -> Event:
    return Event(type=("tool.requested", "policy.decided", "tool.completed")[i % 3], task_id=f"tsk_{i % 2}",
                 agent_id="agt_a", person_id="prs_p" if i % 4 else "prs_q")  # fmt: skip


async def test_the_tail_and_the_keyed_events_read_as_one_chain(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    monkeypatch.setattr(audit_log, "KEYS_EVERY", 3600.0)
    monkeypatch.setattr(audit_log, "KEYS_DUE", 10**9)
    try:
        first = await log.record(_event(0))  # the first commit keys (nothing was keyed yet) …
        for i in range(1, 12):  # … the next ones leave their events in the tail
            await log.record(_event(i))
        assert _keyed(db) == first.seq
        want = {
            "task_id": [i for i in range(12) if i % 2 == 0],
            "type": [i for i in range(12) if i % 3 == 1],
            "person_id": [i for i in range(12) if i % 4 == 0],
        }

        def seqs(**where: str) -> list[int]:
            return [d["seq"] - first.seq for d in query(db, **where, limit=100)[0]]  # type: ignore[arg-type]

        assert seqs(task_id="tsk_0") == want["task_id"]
        assert seqs(type="policy.decided") == want["type"]
        assert seqs(person_id="prs_q") == want["person_id"]
        assert len(seqs(agent_id="agt_a")) == 12
        assert event_counts(db, "tsk_0") == 6

        # keyed half-way (a catch-up of a few rows): the same answers, none twice, pages across the boundary
        with db.write() as conn:
            chain.lock_chain(conn)
            keys.catch_up(conn, 5)
        assert _keyed(db) == first.seq + 5
        assert seqs(task_id="tsk_0") == want["task_id"]
        assert seqs(type="policy.decided") == want["type"]
        assert event_counts(db, "tsk_0") == 6
        pages, after = [], 0
        while True:
            page, nxt = query(db, agent_id="agt_a", after=after, limit=4)
            pages.append([d["seq"] - first.seq for d in page])
            if nxt is None:
                break
            after = nxt
        assert pages == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], []]  # a full page always has a next cursor
        with db.read() as conn:
            newest = keys.select_keyed(conn, [audit_events.c.seq], {"task_id": "tsk_1"}, limit=4, descending=True)
        assert [r[0] - first.seq for r in newest] == [11, 9, 7, 5]
        events, check = timeline(db, "tsk_1")
        assert [e["seq"] - first.seq for e in events] == [1, 3, 5, 7, 9, 11]
        assert check.ok
    finally:
        monkeypatch.undo()
        await log.stop()
        db.dispose()


async def test_a_commit_keys_the_tail_once_it_is_due(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """By count (KEYS_DUE events) or by time (KEYS_EVERY): that commit keys everything before it, and itself."""
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    monkeypatch.setattr(audit_log, "KEYS_EVERY", 3600.0)
    monkeypatch.setattr(audit_log, "KEYS_DUE", 5)
    try:
        await log.record(_event(0))
        base = _keyed(db)
        for i in range(1, 4):
            await log.record(_event(i))
        assert _keyed(db) == base  # three waiting
        last = await log.record_many([_event(4), _event(5)])  # 3 + 2 ≥ 5: due
        assert _keyed(db) == last[-1].seq
        await log.record(_event(6))
        assert _keyed(db) == last[-1].seq
        log._keyed_at = time.monotonic() - 3601  # a quiet hour: due by time
        r = await log.record(_event(7))
        assert _keyed(db) == r.seq
    finally:
        monkeypatch.undo()
        await log.stop()
        db.dispose()


def test_a_synchronous_append_leaves_no_tail(db_url: str) -> None:
    db = Database(db_url)
    try:
        with db.write() as conn:
            records = chain.append(conn, [_event(i) for i in range(7)])
        assert _keyed(db) == records[-1].seq
    finally:
        db.dispose()


def test_the_migration_keys_the_events_a_database_holds(tmp_path: Path) -> None:
    """A database at the revision before: its events are keyed, and the chain table's old indexes are gone."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0009_task_usage")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for seq in range(1, 6):
                conn.execute(
                    text("INSERT INTO audit_events (seq, id, ts, type, task_id, agent_id, person_id, body, prev_hash, "
                         "hash) VALUES (:s, :i, 't', 'policy.decided', :t, 'agt_a', 'prs_p', '{}', 'p', 'h')"),
                    {"s": seq, "i": f"evt_{seq}", "t": f"tsk_{seq % 2}"},
                )  # fmt: skip
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT seq, type, task_id FROM audit_event_keys ORDER BY seq")).all()
        assert [tuple(r) for r in rows] == [(s, "policy.decided", f"tsk_{s % 2}") for s in range(1, 6)]
        assert {ix["name"] for ix in inspect(engine).get_indexes("audit_events")} == set()
        assert {ix["name"] for ix in inspect(engine).get_indexes("audit_event_keys")} == {
            f"ix_audit_event_keys_{c}" for c in keys.KEYED
        }
    finally:
        engine.dispose()


async def test_a_tail_longer_than_one_batch_is_keyed_by_the_commits_that_follow(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    monkeypatch.setattr(audit_log, "KEYS_EVERY", 3600.0)
    monkeypatch.setattr(audit_log, "KEYS_BATCH", 4)
    original = keys.catch_up_raw
    monkeypatch.setattr(keys, "catch_up_raw", lambda cur: original(cur, 4))
    try:
        await log.record_many([_event(i) for i in range(10)])  # first commit: due, keys 4 of 10
        assert _keyed(db) == 4
        await log.record(_event(10))  # still due: 4 more
        assert _keyed(db) == 8
        await log.record(_event(11))  # 4 more: a whole batch, so perhaps more remain — due again
        assert _keyed(db) == 12
        await log.record(_event(12))  # the last one (less than a batch): caught up
        assert _keyed(db) == 13
        await log.record(_event(13))  # not due: left in the tail
        assert _keyed(db) == 13
    finally:
        monkeypatch.undo()
        await log.stop()
        db.dispose()
