"""The SQLite writer lock: one writer at a time across processes and threads, re-entrant in a thread."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tether.errors import Unavailable
from tether.store.db import Busy, Database, WriterLock


def _hold(path: str, marker: str, held: object, release: object) -> None:
    lock = WriterLock(Path(path))
    with lock.held():
        Path(marker).write_text("inside")
        held.set()  # type: ignore[attr-defined]
        release.wait(10)  # type: ignore[attr-defined]
        Path(marker).unlink()


def test_a_writer_in_another_process_excludes_this_one(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    marker = tmp_path / "inside"
    child = ctx.Process(target=_hold, args=(str(tmp_path / "db-writer.lock"), str(marker), held, release))
    child.start()
    try:
        assert held.wait(30)
        got = threading.Event()
        lock = WriterLock(tmp_path / "db-writer.lock")

        def take() -> None:
            with lock.held():
                got.set()
                assert not marker.exists()  # the other process left before this one came in

        t = threading.Thread(target=take)
        t.start()
        time.sleep(0.2)
        assert not got.is_set()  # still waiting while the other process holds it
        release.set()
        t.join(10)
        assert got.is_set()
    finally:
        release.set()
        child.join(10)


def test_reentrant_in_a_thread_exclusive_between_threads(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "x.lock")
    order: list[str] = []
    with lock.held():
        with lock.held():  # a write inside a write: no deadlock
            order.append("inner")

        def other() -> None:
            with lock.held():
                order.append("other")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.1)
        order.append("outer-end")
    t.join(5)
    assert order == ["inner", "outer-end", "other"]


def test_sqlite_databases_write_under_the_lock_and_dispose_closes_it(tmp_path: Path) -> None:
    from sqlalchemy import text

    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    assert db.writer_lock is not None
    assert db.writer_lock.path == tmp_path / "t.db-writer.lock"
    with db.write() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    assert (tmp_path / "t.db-writer.lock").stat().st_mode & 0o777 == 0o600
    db.dispose()
    assert db.writer_lock._fd is None
    assert Database("sqlite:///:memory:").writer_lock is None


def test_a_relaxed_transaction_leaves_its_pooled_connection_durable(tmp_path: Path) -> None:
    """`raw_write(durable=False)` commits without waiting for the disk; the next user of the connection does wait."""
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with db.raw_write(durable=False) as cur:
            cur.execute("PRAGMA synchronous")
            assert cur.fetchone()[0] == 1  # NORMAL
            cur.execute("CREATE TABLE t (x INTEGER)")
        with db.raw_write() as cur:
            cur.execute("PRAGMA synchronous")
            assert cur.fetchone()[0] == 2  # FULL again
            cur.execute("SELECT count(*) FROM t")
            assert cur.fetchone()[0] == 0
    finally:
        db.dispose()


def _outside_writer(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection holding SQLite's write lock (outside Tether's writer lock)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.fixture
def table_db(tmp_path: Path) -> Iterator[Database]:
    """A SQLite database with a table `t (x INTEGER UNIQUE)`, made by a durable raw write (a kept connection)."""
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        with db.raw_write() as cur:
            cur.execute("CREATE TABLE t (x INTEGER UNIQUE)")
        yield db
    finally:
        db.dispose()


def _xs(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.execute(text("SELECT x FROM t ORDER BY x")).scalars())


def test_durable_raw_writes_keep_one_connection_off_the_pool(table_db: Database) -> None:
    """The audit writer's transactions reuse one connection: no pool checkout, and dispose() closes it."""
    db = table_db
    first = db._kept[True].conn
    for i in range(3):
        with db.raw_write() as cur:
            cur.execute("INSERT INTO t VALUES (?)", (i,))
    assert db._kept[True].conn is first
    assert db.engine.pool.checkedout() == 0
    assert _xs(db) == [0, 1, 2]
    db.dispose()
    assert db._kept == {}
    with pytest.raises(sqlite3.ProgrammingError):  # closed, not left open on the file
        first.execute("SELECT 1")


def test_a_failed_transaction_on_the_kept_connection_leaves_nothing_and_it_serves_on(table_db: Database) -> None:
    db = table_db

    def write(*rows: int, fail: bool = False) -> None:
        with db.raw_write() as cur:
            for x in rows:
                cur.execute("INSERT INTO t VALUES (?)", (x,))
            if fail:
                raise RuntimeError("the caller failed half-way")

    with pytest.raises(RuntimeError):
        write(1, fail=True)
    with pytest.raises(Unavailable):  # a database error: the connection is replaced
        write(2, 2)
    assert True not in db._kept
    write(3)
    assert _xs(db) == [3]


def test_a_disposed_engine_retires_the_kept_connections(table_db: Database) -> None:
    """`engine.dispose()` (a new auto-checkpoint threshold, a database file moved away) reaches them too."""
    db = table_db
    first = db._kept[True].conn
    db.wal_autocheckpoint = 4321
    db.engine.dispose()
    with db.raw_write() as cur:
        cur.execute("PRAGMA wal_autocheckpoint")
        assert cur.fetchone()[0] == 4321
    assert db._kept[True].conn is not first


def test_only_the_hasty_kept_connection_refuses_to_wait_for_a_lock_held_elsewhere(
    table_db: Database, tmp_path: Path
) -> None:
    """`wait=False` raises Busy at once; `wait=True`, on its own connection, still waits for the lock."""
    db = table_db
    with db.raw_write(wait=False) as cur:
        cur.execute("INSERT INTO t VALUES (1)")
    other = _outside_writer(tmp_path / "k.db")
    started = time.monotonic()
    with pytest.raises(Busy), db.raw_write(wait=False) as cur:
        cur.execute("INSERT INTO t VALUES (2)")
    assert time.monotonic() - started < 1.0
    threading.Timer(0.3, other.rollback).start()
    with db.raw_write() as cur:  # waits the 0.3 s, then commits
        cur.execute("INSERT INTO t VALUES (3)")
    assert time.monotonic() - started >= 0.3
    other.close()
    with db.raw_write(wait=False) as cur:  # the hasty connection survived its Busy
        cur.execute("INSERT INTO t VALUES (4)")
    assert _xs(db) == [1, 3, 4]


def test_when_free_calls_back_once_another_thread_of_this_process_lets_go(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "w.lock")
    assert not lock.when_free(lambda: None)  # nobody holds it
    held, release, called = threading.Event(), threading.Event(), []

    def holder() -> None:
        with lock.held():
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(10)
    assert not lock.try_acquire()
    assert lock.when_free(lambda: called.append(lock._owner))
    assert called == []
    release.set()
    t.join(10)
    assert called == [None]  # called once the lock was let go
    assert lock.try_acquire()
    lock.release()
    with lock.held():
        assert not lock.when_free(lambda: None)  # held by this very thread: nothing to wait for
    lock.close()


def test_when_free_does_not_wait_for_another_process(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(tmp_path / "w.lock"), str(tmp_path / "inside"), held, release))
    child.start()
    lock = WriterLock(tmp_path / "w.lock")
    try:
        assert held.wait(30)
        assert not lock.try_acquire()
        assert not lock.when_free(lambda: None)  # the holder is another process: the caller waits its own way
    finally:
        release.set()
        child.join(30)
        lock.close()
