"""Records of an event loop are committed on the loop when the write lock is free, in one transaction per
turn of the loop; when another writer holds the lock they go to the writer thread and the loop keeps serving."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.audit.log import AuditLog
from tether.audit.model import Event, Receipt
from tether.audit.query import query
from tether.audit.verify import verify
from tether.store.db import Database


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


def _db(url: str) -> Database:
    from tether.store.migrate import upgrade

    upgrade(url)
    return Database(url)


async def _record_while_held(
    log: AuditLog, let_go: Callable[[], None], task_id: str, timeout: float
) -> tuple[Receipt, int, bool]:
    """Record one event while another writer holds a lock that `let_go` releases 0.4 s later (from a thread).

    Returns the receipt, how often a ticker task ran on the loop meanwhile, and whether the lock had been
    let go when the record returned.
    """
    released = threading.Event()

    def release_later() -> None:
        time.sleep(0.4)
        let_go()
        released.set()

    threading.Thread(target=release_later, daemon=True).start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while not released.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.ensure_future(ticker())
    receipt = await asyncio.wait_for(log.record(Event(type="policy.decided", task_id=task_id)), timeout)
    was_released = released.is_set()
    await tick
    return receipt, ticks, was_released


def _committing_threads(
    monkeypatch: pytest.MonkeyPatch, *, writer_inside: threading.Event | None = None
) -> dict[str, str]:
    """Each recorded event's type → the thread that chained it. With `writer_inside`, the writer thread sets it
    and then stalls 0.3 s inside its commit, holding the write lock."""
    from tether.audit import chain

    where: dict[str, str] = {}
    real = chain.append_raw

    def noted(cur: object, *, postgres: bool, events: list[Event], content: object = None) -> object:
        name = threading.current_thread().name
        if writer_inside is not None and name == "tether-audit-writer":
            writer_inside.set()
            time.sleep(0.3)
        for e in events:
            where[e.type] = name
        return real(cur, postgres=postgres, events=events, content=content)  # type: ignore[arg-type]

    monkeypatch.setattr(chain, "append_raw", noted)
    return where


async def test_records_of_one_turn_of_the_loop_share_one_commit(sqlite_url: str) -> None:
    db = _db(sqlite_url)
    commits: list[int] = []
    log = AuditLog(db, digest_key=b"k" * 32, on_commit=commits.append)
    try:
        receipts = await asyncio.gather(
            *(log.record(Event(type="policy.decided", task_id=f"tsk_{i}")) for i in range(20))
        )
        assert commits == [20]  # one transaction, one fsync, for the twenty calls that decided in this turn
        assert sorted(r.seq for r in receipts) == list(range(1, 21))
        assert verify(db, None).ok
    finally:
        await log.stop()
        db.dispose()


async def test_a_writer_holding_the_lock_never_blocks_the_loop(sqlite_url: str) -> None:
    """Another process holds the write lock: the record waits on the writer thread, the loop runs on."""
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    assert db.writer_lock is not None
    other = os.open(db.writer_lock.path, os.O_RDWR | os.O_CREAT, 0o600)  # another process's handle on the lock
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        receipt, ticks, released = await _record_while_held(log, lambda: fcntl.flock(other, fcntl.LOCK_UN), "tsk_w", 10)
        assert released  # it was committed only once the other writer let go
        assert ticks >= 10  # …and the loop served others meanwhile
        assert receipt.seq == 1
        assert [e["type"] for e in query(db, task_id="tsk_w")[0]] == ["policy.decided"]
    finally:
        os.close(other)
        await log.stop()
        db.dispose()


async def test_stopping_commits_records_still_held_for_company(sqlite_url: str) -> None:
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32, lazy_window=30.0)
    try:
        lazy = asyncio.ensure_future(log.record(Event(type="tool.completed", task_id="tsk_s"), lazy=True))
        await asyncio.sleep(0.05)
        assert not lazy.done()  # held: no urgent record came to ride with
        await log.stop()
        receipt = await asyncio.wait_for(lazy, 5)
        assert receipt.seq == 1
        assert [e["type"] for e in query(db, task_id="tsk_s")[0]] == ["tool.completed"]
    finally:
        db.dispose()


async def test_a_lock_held_outside_tether_never_blocks_the_loop(sqlite_url: str) -> None:
    """A `sqlite3` shell (no writer lock) holds SQLite's write lock: the loop does not wait on it."""
    import sqlite3

    db = _db(sqlite_url)
    assert db.ping()  # the server's connections have switched the file to WAL, as they have once it runs
    log = AuditLog(db, digest_key=b"k" * 32)
    shell = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
    shell.execute("BEGIN IMMEDIATE")  # held, the way an operator's open write transaction would be
    try:
        receipt, ticks, released = await _record_while_held(log, lambda: shell.execute("COMMIT"), "tsk_x", 20)
        assert released
        assert ticks >= 10
        assert receipt.seq == 1
        assert verify(db, None).ok
    finally:
        shell.close()
        await log.stop()
        db.dispose()


async def test_usage_due_is_counted_in_the_loops_own_commit(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the loop, committed usage is counted in the audit transaction itself, never by the writer thread (which
    would hold the write lock while it waits for the GIL, sending the loop's commits to the thread meanwhile);
    deltas committed before the count was due ride in the next commit that counts."""
    from sqlalchemy import select

    import tether.audit.log as audit_log
    from tether.store.schema.audit import audit_events
    from tether.store.schema.gateway import task_usage

    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32, content_key=b"c" * 32)
    told: list[tuple[int, dict[str, int]]] = []
    log.usage_sink = lambda _usage, totals: told.extend((totals or {}).values())

    def thread_counts(*_: object) -> None:
        raise AssertionError("the writer thread counted usage that the loop's commit should have")

    monkeypatch.setattr(AuditLog, "_count", thread_counts)
    monkeypatch.setattr(audit_log, "COUNT_EVERY", 3600.0)  # nothing is due after the first count …
    try:
        r1 = await log.record(Event(type="tool.completed", task_id="tsk_u"), usage=("tsk_u", {"items": 2}))
        await log.record(Event(type="tool.completed", task_id="tsk_u"), usage=("tsk_u", {"items": 3}))
        with db.read() as conn:
            row = conn.execute(select(task_usage.c["items"], task_usage.c.updated_seq)).one()
        assert tuple(row) == (2, r1.seq)  # counted with the first record, in its commit
        assert told == [(r1.seq, {"items": 2, "bytes": 0, "calls": 0, "external_recipients": 0})]
        # … now it is, for the loop (past COUNT_EVERY) but not yet for the thread (2 × COUNT_EVERY, for when the
        # loop has gone quiet): it still holds the second record's deltas and counts them only if the loop does not
        monkeypatch.setattr(audit_log, "COUNT_EVERY", 1.0)
        log._counted_at = time.monotonic() - 1.5
        log.store_content(r1.id, {"note": "a commit of content alone counts nothing, and loses nothing"})
        await asyncio.sleep(0.05)
        r3 = await log.record(Event(type="tool.completed", task_id="tsk_u"), usage=("tsk_u", {"items": 5}))
        with db.read() as conn:  # the next commit with events counts what was left and its own
            assert tuple(conn.execute(select(task_usage.c["items"], task_usage.c.updated_seq)).one()) == (10, r3.seq)
            assert conn.execute(
                select(audit_events.c.id).where(audit_events.c.content.is_not(None))
            ).scalars().all() == [r1.id]
        assert told[-1] == (r3.seq, {"items": 10, "bytes": 0, "calls": 0, "external_recipients": 0})
    finally:
        monkeypatch.undo()
        await log.stop()
        db.dispose()


async def test_records_wait_for_the_writer_thread_then_commit_on_the_loop(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While this process's writer thread holds the write lock, the loop's records are not handed to it (it would
    hold the lock longer still, waiting for the GIL): they wait, and are committed on the loop once it lets go."""
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    inside = threading.Event()
    where = _committing_threads(monkeypatch, writer_inside=inside)
    try:
        await log.start()
        off_loop = asyncio.get_running_loop().run_in_executor(
            None, log.record_sync, [Event(type="thread.first", task_id="tsk_w")]
        )
        assert await asyncio.to_thread(inside.wait, 10)  # the writer thread is inside its commit now
        receipt = await asyncio.wait_for(log.record(Event(type="loop.second", task_id="tsk_w")), 10)
        first = (await off_loop)[0]
        assert where == {"thread.first": "tether-audit-writer", "loop.second": threading.current_thread().name}
        assert receipt.seq == first.seq + 1
    finally:
        monkeypatch.undo()
        await log.stop()
        db.dispose()
    assert verify(db, None).ok


async def test_records_wait_for_any_thread_of_this_process_holding_the_lock(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for another of this process's writers (the checkpoint signer, a write from a worker thread)."""
    db = _db(sqlite_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    held, release = threading.Event(), threading.Event()
    where = _committing_threads(monkeypatch)

    def other_writer() -> None:
        with db.write():
            held.set()
            release.wait(10)

    worker = threading.Thread(target=other_writer)
    worker.start()
    try:
        assert held.wait(10)
        pending = asyncio.ensure_future(log.record(Event(type="loop.first", task_id="tsk_o")))
        await asyncio.sleep(0.2)
        assert not pending.done()
        release.set()
        receipt = await asyncio.wait_for(pending, 10)
        assert receipt.seq == 1
        assert where == {"loop.first": threading.current_thread().name}  # committed on the loop, not by the thread
    finally:
        release.set()
        worker.join(10)
        await log.stop()
        db.dispose()
