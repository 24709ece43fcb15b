"""The SQLite writer lock: one writer at a time across processes and threads, re-entrant in a thread."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

from tether.store.db import Database, WriterLock


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
