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
    wal = WalCheckpointer(db, interval=0.05)
    try:
        assert autocheckpoint(db) == 1000
        wal.start()
        assert autocheckpoint(db) == BACKSTOP_PAGES
        for i in range(50):  # 50 commits of ~8 KB each: left alone, they would sit in the WAL
            with db.raw_write() as cur:
                cur.execute("INSERT INTO audit_content (event_id, blob) VALUES (?, ?)", (f"evt_{i}", b"x" * 8000))
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
