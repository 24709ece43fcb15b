"""The background WAL checkpointer: checkpoints leave the commit path, the WAL stays bounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tether.store.db import BACKSTOP_PAGES, Database, WalCheckpointer
from tether.store.migrate import upgrade


def autocheckpoint(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def test_a_running_checkpointer_copies_the_wal_and_raises_the_inline_threshold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    db = Database(url)
    with db.raw_write() as cur:  # a table of the test's own, for writes of a chosen size
        cur.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY, v BLOB)")
    wal = WalCheckpointer(db, interval=0.05)
    try:
        assert autocheckpoint(db) == 1000
        wal.start()
        assert autocheckpoint(db) == BACKSTOP_PAGES
        for i in range(50):  # 50 commits of ~8 KB each: left alone, they would sit in the WAL
            with db.raw_write() as cur:
                cur.execute("INSERT INTO scratch (k, v) VALUES (?, ?)", (f"evt_{i}", b"x" * 8000))
        seen = wal.checkpoints
        deadline = time.monotonic() + 10
        while wal.checkpoints < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert wal.checkpoints >= seen + 2
        with db.engine.connect() as conn:  # every frame of the WAL is in the database file already
            busy, frames, copied = conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)")).one()
        assert (busy, frames) == (0, copied)
    finally:
        wal.stop()
    assert autocheckpoint(db) == 1000  # stopped: SQLite's own behaviour again
    db.dispose()


def test_the_checkpointer_does_nothing_on_postgresql(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("the SQLite case is the test above")
    db = Database(db_url)
    wal = WalCheckpointer(db, interval=0.01)
    try:
        wal.start()
        time.sleep(0.1)
        assert (wal.checkpoints, wal._thread) == (0, None)
    finally:
        wal.stop()
        db.dispose()


def test_a_long_fully_copied_wal_is_restarted_so_commits_write_over_it(tmp_path: Path) -> None:
    """Past RESTART_FRAMES of checkpointed WAL, the next commit writes at the top of the WAL again."""
    from tether.store.db import RESTART_FRAMES

    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    db = Database(url)
    with db.raw_write() as cur:  # a table of the test's own, for writes of a chosen size
        cur.execute("CREATE TABLE scratch (k TEXT PRIMARY KEY, v BLOB)")
    wal = WalCheckpointer(db, interval=3600)  # driven by hand below
    try:
        wal.start()
        blob = b"x" * 40_000  # ~10 pages a commit
        for i in range(RESTART_FRAMES // 10 + 20):
            with db.raw_write() as cur:
                cur.execute("INSERT INTO scratch (k, v) VALUES (?, ?)", (f"evt_{i}", blob))
        size = (tmp_path / "t.db-wal").stat().st_size
        assert wal.checkpoint()
        assert wal.restarts == 1
        with db.raw_write() as cur:
            cur.execute("INSERT INTO scratch (k, v) VALUES (?, ?)", ("evt_next", b"y"))
        with db.engine.connect() as conn:
            _, frames, _ = conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)")).one()
        assert frames < 20  # the commit after the restart started the WAL over
        assert (tmp_path / "t.db-wal").stat().st_size == size  # written over, not grown
        assert wal.checkpoint()
        assert wal.restarts == 1  # a short WAL is left alone
    finally:
        wal.stop()
        db.dispose()
