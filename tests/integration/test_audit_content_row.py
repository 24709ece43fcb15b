"""The sealed content of an event lives in the event's row (migration 0011): kept, read, erased, migrated.

The row's hashed `body` never includes it, so erasing content leaves the chain verifiable; and a call's
commit writes no page of a table of its own for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from tether.audit.model import Event
from tether.audit.query import erase_content, read_content
from tether.audit.verify import verify
from tether.crypto import seal
from tether.store.db import Database
from tether.store.migrate import alembic_config, upgrade

KEY = b"c" * 32


def _insert_event(conn: object, seq: int, eid: str) -> None:
    conn.execute(  # type: ignore[attr-defined]
        text("INSERT INTO audit_events (seq, id, ts, type, task_id, agent_id, person_id, body, prev_hash, hash) "
             "VALUES (:s, :i, 't', 'tool.requested', 'tsk_1', 'agt_a', 'prs_p', '{}', 'p', 'h')"),
        {"s": seq, "i": eid},
    )  # fmt: skip


def test_the_migration_moves_content_into_the_rows_and_back(tmp_path: Path) -> None:
    """A database at 0010 with content kept, content erased and an event without any: after the upgrade each
    event reads as before and the old table is gone; the downgrade restores it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0010_audit_keys")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for seq, eid in enumerate(("evt_kept", "evt_erased", "evt_none"), start=1):
                _insert_event(conn, seq, eid)
            conn.execute(text("INSERT INTO audit_content (event_id, blob) VALUES ('evt_kept', :b)"),
                         {"b": seal(KEY, b'{"prompt": "hello"}', b"evt_kept")})  # fmt: skip
            conn.execute(text("INSERT INTO audit_content (event_id, blob, erased_at) VALUES ('evt_erased', NULL, 't')"))
        upgrade(url)
        assert "audit_content" not in inspect(engine).get_table_names()
        db = Database(url)
        try:
            assert read_content(db, KEY, "evt_kept") == {"prompt": "hello"}
            assert read_content(db, KEY, "evt_erased") is None  # erased: known, and empty
            for missing in ("evt_none", "evt_nosuch"):
                with pytest.raises(Exception, match="no content is kept"):
                    read_content(db, KEY, missing)
        finally:
            db.dispose()
        command.downgrade(alembic_config(url), "0010_audit_keys")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT event_id, blob IS NULL, erased_at FROM audit_content ORDER BY event_id"))
            assert [tuple(r) for r in rows] == [("evt_erased", 1, "t"), ("evt_kept", 0, None)]
        assert "content" not in {c["name"] for c in inspect(engine).get_columns("audit_events")}
    finally:
        engine.dispose()


def test_content_rides_in_its_events_row_and_erasing_it_keeps_the_chain(db_url: str) -> None:
    """Content given with its event is in that event's row after the same commit; content for an event committed
    before fills that row, once (the first content kept wins); erasure empties it and the chain still verifies."""
    from tether.audit.log import AuditLog

    db = Database(db_url)
    log = AuditLog(db, digest_key=b"k" * 32, content_key=KEY)
    try:
        import asyncio

        async def run() -> tuple[str, str]:
            first = await log.record_many([Event(id="evt_c1", type="tool.requested", task_id="tsk_r")],
                                          content=[("evt_c1", {"prompt": "one"})])  # fmt: skip
            later = await log.record(Event(type="tool.requested", task_id="tsk_r"))
            log.store_content(later.id, {"prompt": "two"})
            log.store_content(later.id, {"prompt": "not this one"})
            await log.record(Event(type="task.ended", task_id="tsk_r"))  # the content rode this commit
            log.store_content(later.id, {"prompt": "nor this one"})
            await log.record(Event(type="task.ended", task_id="tsk_r"))
            return first[0].id, later.id

        one, two = asyncio.run(run())
        assert read_content(db, KEY, one) == {"prompt": "one"}
        assert read_content(db, KEY, two) == {"prompt": "two"}
        erase_content(db, two, actor="prs_dpo")
        assert read_content(db, KEY, two) is None
        assert erase_content(db, two, actor="prs_dpo") == 0  # erased already: nothing more to do
        log.store_content(two, {"prompt": "back again"})
        asyncio.run(log.record(Event(type="task.ended", task_id="tsk_r")))
        assert read_content(db, KEY, two) is None  # erased content is never written again
        assert verify(db, None).ok
    finally:
        log.close()
        db.dispose()
