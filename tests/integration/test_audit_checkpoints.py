"""Checkpoints are signed every N events and every T seconds, in the database and the external file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.audit.checkpoints import Checkpointer, list_checkpoints, load_key, signing_secret, verify_jws
from tether.audit.log import AuditLog
from tether.audit.model import Event
from tether.audit.verify import verify
from tether.store.db import Database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    yield d
    d.dispose()


async def _wait_for(pred, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_checkpoint_every_n_events_and_every_t_seconds(db: Database, tmp_path: Path) -> None:
    """After N events the head is signed at once; a lone event is signed when T seconds pass."""
    key = load_key(db, signing_secret(b"m" * 32))
    assert key is not None
    file = tmp_path / "checkpoints.jsonl"
    cp = Checkpointer(db, key, every=10, seconds=0.3, path=file)
    log = AuditLog(db, digest_key=b"k" * 32)
    log.listeners.append(cp.on_commit)
    await cp.start()
    try:
        await log.record_many([Event(type="x.y", detail={"i": i}) for i in range(10)])
        await _wait_for(lambda: [c.seq for c in list_checkpoints(db)] == [10])
        await log.record(Event(type="x.z"))
        await _wait_for(lambda: [c.seq for c in list_checkpoints(db)] == [10, 11])
    finally:
        await cp.stop()
        log.close()
    lines = [json.loads(x) for x in file.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [10, 11]
    payload = verify_jws(key, lines[1]["jws"])
    assert payload is not None
    assert (payload["seq"], payload["chain_id"]) == (11, key.chain_id)
    r = verify(db, key, checkpoint_file=file)
    assert (r.ok, r.checkpoints) == (True, 2)


def test_the_key_is_created_once_and_reloaded(db: Database) -> None:
    """Two loads (two processes) share one audit key and chain id."""
    a = load_key(db, signing_secret(b"m" * 32))
    b = load_key(db, signing_secret(b"m" * 32))
    assert a is not None
    assert b is not None
    assert (a.kid, a.chain_id, a.public_b64) == (b.kid, b.chain_id, b.public_b64)
