"""Reliability: a writer killed mid-burst loses no receipted event; an unavailable store fails callers cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from tether.audit.log import AuditLog
from tether.audit.model import Event
from tether.audit.verify import verify
from tether.errors import Unavailable
from tether.store.db import Database
from tether.store.schema.audit import audit_events

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from tether.audit.log import AuditLog
    from tether.audit.model import Event
    from tether.store.db import Database

    async def main() -> None:
        log = AuditLog(Database(sys.argv[1]), digest_key=b"k" * 32)
        out = sys.stdout

        async def writer(k: int) -> None:
            i = 0
            while True:
                r = await log.record(Event(type="tool.requested", task_id="tsk_burst", detail={"w": k, "i": i}))
                out.write(f"{r.seq} {r.id}\\n")
                out.flush()
                i += 1

        await asyncio.gather(*(writer(k) for k in range(32)))

    asyncio.run(main())
    """
)


def ids_in(db: Database) -> set[str]:
    with db.read() as conn:
        return {str(r[0]) for r in conn.execute(select(audit_events.c.id))}


@pytest.mark.slow
def test_writer_killed_mid_burst_loses_no_receipted_event(db_url: str, tmp_path: Path) -> None:
    """SIGKILL during a burst of 32 writers: the chain verifies and every receipt's event is stored."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), db_url], stdout=subprocess.PIPE, text=True)
    receipts: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(receipts) < 3000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        receipts.append(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    receipts.extend(line.split()[1] for line in proc.stdout.read().splitlines() if len(line.split()) == 2)
    proc.wait(10)
    proc.stdout.close()
    assert len(receipts) >= 1000, "the writer produced too few receipts to make the test meaningful"
    db = Database(db_url)
    try:
        stored = ids_in(db)
        assert set(receipts) <= stored
        r = verify(db, None)
        assert r.ok, r
        assert r.events == len(stored)
        # writing resumes after the crash, continuing the same chain
        log = AuditLog(db, digest_key=b"k" * 32)
        try:
            assert log.record_sync([Event(type="task.ended")])[0].seq == r.head_seq + 1
        finally:
            log.close()
        assert verify(db, None).ok
    finally:
        db.dispose()


def _break(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        path.rename(path.with_suffix(".away"))
        path.write_bytes(b"this is not a database" * 100)
    else:
        name = make_url(db_url).database
        admin = create_engine(make_url(db_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        admin.dispose()


def _restore(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        path.unlink()
        path.with_suffix(".away").rename(path)
    else:
        name = make_url(db_url).database
        admin = create_engine(make_url(db_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


async def test_unavailable_store_fails_callers_and_writing_resumes(db_url: str) -> None:
    """With the store gone, callers get Unavailable and nothing is half-written; when it returns, writing resumes."""
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32)
    try:
        first = await log.record(Event(type="task.started", task_id="tsk_r"))
        _break(db_url)
        db.engine.dispose()  # pooled connections would still reach the old file / backend
        try:
            results = await asyncio.gather(
                *(log.record(Event(type="tool.requested", task_id="tsk_r", detail={"i": i})) for i in range(20)),
                return_exceptions=True,
            )
            assert all(isinstance(r, Unavailable) for r in results), results
        finally:
            _restore(db_url)
            db.engine.dispose()
        after = await log.record(Event(type="task.ended", task_id="tsk_r"))
        assert after.seq == first.seq + 1  # none of the failed batch was stored
        r = verify(db, None)
        assert (r.ok, r.events) == (True, 2)
    finally:
        log.close()
        db.dispose()


async def test_writer_survives_a_broken_log_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing batch whose error log also fails still answers every waiter, and the writer lives on."""
    import tether.audit.log as audit_log

    def broken(*_a: object, **_k: object) -> None:
        raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(audit_log.log, "error", broken)
    db = Database(f"sqlite:///{tmp_path}")  # a directory: every write fails
    log = AuditLog(db, digest_key=b"k" * 32)
    try:
        for _ in range(2):
            with pytest.raises(Unavailable):
                await asyncio.wait_for(log.record(Event(type="x.y")), 10)
    finally:
        log.close()
        db.dispose()


async def test_a_record_that_cannot_be_encoded_fails_alone(db_url: str) -> None:
    """A lone surrogate (JSON lets a client send "\\ud800") in one caller's event refuses that caller only:
    the record that shares its batch is committed, and the chain verifies."""
    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32, lazy_window=5.0)
    try:
        # the lazy record waits in the writer for the next urgent one: both land in one batch
        good = asyncio.ensure_future(log.record(Event(type="tool.completed", task_id="tsk_e"), lazy=True))
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable, match="cannot be encoded"):
            await asyncio.wait_for(log.record(Event(type="tool.requested", resource={"id": "\ud800"})), 10)
        assert (await asyncio.wait_for(good, 10)).seq == 1
        after = await log.record(Event(type="task.ended", task_id="tsk_e"))
        assert after.seq == 2
        r = verify(db, None)
        assert (r.ok, r.events) == (True, 2)
    finally:
        log.close()
        db.dispose()
