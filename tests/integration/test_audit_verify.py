"""Verification finds every kind of tamper, on SQLite and PostgreSQL, and names the first bad seq."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from tether.audit import keys
from tether.audit.chain import chain_hash
from tether.audit.checkpoints import AuditKey, Checkpointer, load_key, signing_secret
from tether.audit.log import AuditLog
from tether.audit.model import GENESIS_HASH, Event
from tether.audit.verify import verify
from tether.canon import canonical
from tether.store.db import Database
from tether.store.schema.audit import audit_checkpoints, audit_event_keys, audit_events, audit_keys

MASTER = b"m" * 32


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    yield d
    d.dispose()


@pytest.fixture
def key(db: Database) -> AuditKey:
    k = load_key(db, signing_secret(MASTER))
    assert k is not None
    return k


def fill(db: Database, n: int = 20) -> None:
    log = AuditLog(db, digest_key=b"k" * 32)
    try:
        log.record_sync(
            [Event(type="tool.requested", actor="agt_a", task_id="tsk_1", agent_id="agt_a", person_id="prs_p",
                   detail={"i": i}) for i in range(n)]
        )  # fmt: skip
    finally:
        log.close()


def rows(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(audit_events).order_by(audit_events.c.seq))]


def rewrite(db: Database, docs: list[dict[str, object]]) -> None:
    """Replace the table with `docs` as given, and its lookup keys to match (an attacker with database write
    access who knows the schema)."""
    with db.write() as conn:
        conn.execute(delete(audit_events))
        conn.execute(delete(audit_event_keys))
        if docs:
            conn.execute(insert(audit_events), docs)
        keys.catch_up(conn)


def rehash(doc_rows: list[dict[str, object]], start: int = 0) -> list[dict[str, object]]:
    """Recompute bodies and hashes from `start` on, with seq renumbered: a careful forger."""
    out = [dict(r) for r in doc_rows]
    prev = GENESIS_HASH if start == 0 else str(out[start - 1]["hash"])
    for i in range(start, len(out)):
        body = json.loads(str(out[i]["body"]))
        body["seq"], body["prev_hash"] = i + 1, prev
        b = canonical(body)
        out[i].update(seq=i + 1, body=b.decode(), prev_hash=prev, hash=chain_hash(prev, b))
        prev = str(out[i]["hash"])
    return out


def test_intact_chain_verifies(db: Database, key: AuditKey) -> None:
    """An untouched chain verifies with every event counted."""
    fill(db, 50)
    r = verify(db, key)
    assert (r.ok, r.events, r.head_seq, r.first_bad_seq) == (True, 50, 50, None)


def test_empty_chain_verifies(db: Database, key: AuditKey) -> None:
    """An empty log is intact."""
    assert verify(db, key).ok


def test_verification_streams_in_small_batches(db: Database, key: AuditKey) -> None:
    """Batch boundaries do not change the result (keyset pagination)."""
    fill(db, 25)
    assert verify(db, key, batch=4).ok


def test_edited_field_is_found(db: Database, key: AuditKey) -> None:
    """An attacker changes one field in the stored body: the hash no longer matches."""
    fill(db)
    with db.write() as conn:
        body = conn.execute(select(audit_events.c.body).where(audit_events.c.seq == 7)).scalar_one()
        conn.execute(update(audit_events).where(audit_events.c.seq == 7).values(body=body.replace("prs_p", "prs_x")))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "edited", 7)


def test_edited_indexed_column_is_found(db: Database, key: AuditKey) -> None:
    """An attacker re-attributes an event in the indexed column only (hiding it from queries)."""
    fill(db)
    with db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 5).values(person_id="prs_other"))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "edited", 5)


def test_an_edited_or_removed_lookup_key_is_found(db: Database, key: AuditKey) -> None:
    """Queries find events through their lookup keys: a key moved to another task, or removed, would hide the
    event from its task's story, though the chain itself is untouched."""
    fill(db)
    with db.write() as conn:
        conn.execute(update(audit_event_keys).where(audit_event_keys.c.seq == 6).values(task_id="tsk_other"))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "edited", 6)
    assert r.detail is not None
    assert "lookup keys" in r.detail
    assert verify(db, key, batch=4).first_bad_seq == 6  # the keys are read per batch of rows
    with db.write() as conn:
        conn.execute(update(audit_event_keys).where(audit_event_keys.c.seq == 6).values(task_id="tsk_1"))
        conn.execute(delete(audit_event_keys).where(audit_event_keys.c.seq == 3))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "edited", 3)


def test_a_lookup_key_planted_past_the_head_is_found(db: Database, key: AuditKey) -> None:
    """A key for a seq the chain has not reached: events were cut from its end, or the key was planted to take over
    the next event (or stop the keying altogether). Either way the log is not intact."""
    fill(db)
    with db.write() as conn:
        conn.execute(insert(audit_event_keys).values(seq=21, type="tool.requested", task_id="tsk_decoy"))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "truncated", 21)


def test_edited_and_rehashed_event_breaks_the_next_link(db: Database, key: AuditKey) -> None:
    """An attacker edits event 9 and recomputes its hash: event 10 no longer links to it."""
    fill(db)
    docs = rows(db)
    body = json.loads(str(docs[8]["body"]))
    body["detail"] = {"i": 999}
    b = canonical(body)
    docs[8].update(body=b.decode(), hash=chain_hash(str(docs[8]["prev_hash"]), b))
    rewrite(db, docs)
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "edited", 9)


def test_deleted_event_leaves_a_gap(db: Database, key: AuditKey) -> None:
    """An attacker deletes event 11."""
    fill(db)
    with db.write() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq == 11))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "deleted", 11)


def test_deleted_and_renumbered_event_is_found(db: Database, key: AuditKey) -> None:
    """An attacker deletes event 4 and renumbers the rest to close the gap."""
    fill(db)
    docs = rows(db)
    del docs[3]
    for i, d in enumerate(docs):
        d["seq"] = i + 1
    rewrite(db, docs)
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "deleted", 4)


def test_inserted_event_is_found(db: Database, key: AuditKey) -> None:
    """An attacker inserts a well-formed forged event at seq 6, chained to event 5, and shifts the rest."""
    fill(db)
    docs = rows(db)
    forged = dict(docs[5])
    body = json.loads(str(forged["body"]))
    body.update(seq=6, id="evt_forged", prev_hash=docs[4]["hash"])
    b = canonical(body)
    forged.update(
        seq=6, id="evt_forged", body=b.decode(), prev_hash=docs[4]["hash"], hash=chain_hash(str(docs[4]["hash"]), b)
    )
    docs.insert(5, forged)
    for i, d in enumerate(docs):
        d["seq"] = i + 1
    rewrite(db, docs)
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "inserted", 6)


def test_reordered_events_are_found(db: Database, key: AuditKey) -> None:
    """An attacker swaps events 12 and 13."""
    fill(db)
    docs = rows(db)
    docs[11]["seq"], docs[12]["seq"] = 13, 12
    rewrite(db, docs)
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "reordered", 12)


def test_truncated_tail_is_found_by_the_checkpoint(db: Database, key: AuditKey, tmp_path: Path) -> None:
    """An attacker drops the last events: the signed checkpoint covers more than remains."""
    fill(db, 30)
    Checkpointer(db, key, every=10, seconds=60, path=tmp_path / "cp.jsonl").checkpoint()
    with db.write() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 24))
    r = verify(db, key, checkpoint_file=tmp_path / "cp.jsonl")
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "truncated", 25)


def test_truncation_with_checkpoints_deleted_is_found_by_the_external_file(
    db: Database, key: AuditKey, tmp_path: Path
) -> None:
    """An attacker drops the tail AND the checkpoint rows: the file outside the database still tells."""
    fill(db, 30)
    Checkpointer(db, key, every=10, seconds=60, path=tmp_path / "cp.jsonl").checkpoint()
    with db.write() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 20))
        conn.execute(delete(audit_checkpoints))
    assert verify(db, key).kind == "truncated"  # the dropped events' lookup keys are still there …
    with db.write() as conn:
        conn.execute(delete(audit_event_keys).where(audit_event_keys.c.seq > 20))
    assert verify(db, key).ok  # … a careful forger drops them too: without the external anchor, invisible
    r = verify(db, key, checkpoint_file=tmp_path / "cp.jsonl")
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "truncated", 21)


def test_forged_checkpoint_is_found(db: Database, key: AuditKey, tmp_path: Path) -> None:
    """An attacker edits a checkpoint's hash to match a rewritten chain: its signature fails."""
    fill(db, 10)
    Checkpointer(db, key, every=10, seconds=60).checkpoint()
    with db.write() as conn:
        conn.execute(update(audit_checkpoints).values(hash="f" * 64))
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "checkpoint_forged", 10)


def test_checkpoint_signed_with_an_attackers_key_is_found(db: Database, key: AuditKey) -> None:
    """An attacker signs a checkpoint with their own Ed25519 key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tether.audit.checkpoints import sign

    fill(db, 10)
    evil_private = Ed25519PrivateKey.generate()
    evil = AuditKey(key.kid, key.chain_id, evil_private.public_key(), evil_private)
    with db.read() as conn:
        h = conn.execute(select(audit_events.c.hash).where(audit_events.c.seq == 10)).scalar_one()
    with db.write() as conn:
        conn.execute(insert(audit_checkpoints).values(seq=10, chain_id=key.chain_id, hash=h, ts="x", kid=key.kid,
                                                      jws=sign(evil, 10, h, "x")))  # fmt: skip
    r = verify(db, key)
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "checkpoint_forged", 10)


def test_swapped_audit_key_row_is_refused(db: Database, key: AuditKey) -> None:
    """An attacker replaces the public key in the key row: the sealed private key no longer authenticates."""
    from tether.audit.checkpoints import AuditKeyTampered

    with db.write() as conn:
        conn.execute(update(audit_keys).values(public_key="A" * 43))
    with pytest.raises(AuditKeyTampered):
        load_key(db, signing_secret(MASTER))


def test_whole_chain_rewritten_without_the_audit_key_is_caught(db: Database, key: AuditKey, tmp_path: Path) -> None:
    """An attacker with database write access rewrites every event from the start, recomputing every hash."""
    fill(db, 40)
    cp = Checkpointer(db, key, every=10, seconds=60, path=tmp_path / "cp.jsonl")
    cp.checkpoint()
    docs = rows(db)
    for d in docs:
        d["body"] = str(d["body"]).replace("prs_p", "prs_z")
        d["person_id"] = "prs_z"
    forged = rehash(docs)
    rewrite(db, forged)
    # the forger cannot sign: the chain itself is internally consistent…
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 40
    r = verify(db, key, checkpoint_file=tmp_path / "cp.jsonl")
    assert (r.ok, r.kind, r.first_bad_seq) == (False, "checkpoint_mismatch", 1)


def test_rewritten_chain_with_checkpoints_deleted_is_caught_by_the_file(
    db: Database, key: AuditKey, tmp_path: Path
) -> None:
    """The same forger also deletes the checkpoint rows; the external file still holds the signed head."""
    fill(db, 20)
    Checkpointer(db, key, every=10, seconds=60, path=tmp_path / "cp.jsonl").checkpoint()
    forged = rehash([{**d, "body": str(d["body"]).replace('"i":3', '"i":4')} for d in rows(db)])
    rewrite(db, forged)
    with db.write() as conn:
        conn.execute(delete(audit_checkpoints))
    r = verify(db, key, checkpoint_file=tmp_path / "cp.jsonl")
    assert (r.ok, r.kind) == (False, "checkpoint_mismatch")


def test_verify_is_not_fooled_by_a_first_event_with_a_wrong_genesis(db: Database, key: AuditKey) -> None:
    """A forged chain that starts from another prev_hash than 64 zeros is refused at seq 1."""
    fill(db, 3)
    docs = rows(db)
    fake = hashlib.sha256(b"x").hexdigest()
    body = json.loads(str(docs[0]["body"]))
    body["prev_hash"] = fake
    b = canonical(body)
    docs[0].update(body=b.decode(), prev_hash=fake, hash=chain_hash(fake, b))
    rewrite(db, docs)
    r = verify(db, key)
    assert (r.ok, r.first_bad_seq) == (False, 1)


@pytest.mark.parametrize("tamper", ["none", "edit", "delete_boundary", "rehash_boundary", "reorder"])
def test_parallel_verification_finds_the_same_first_bad_seq(
    db: Database, key: AuditKey, tamper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges checked by forked workers, links between them checked by the parent: same verdict as one pass."""
    import tether.audit.verify as v

    monkeypatch.setattr(v, "PARALLEL_MIN", 10)
    fill(db, 40)  # two spans: 1..20 and 21..
    docs = rows(db)
    if tamper == "edit":
        docs[29]["type"] = "tool.other"
    elif tamper == "delete_boundary":
        del docs[20]
    elif tamper == "rehash_boundary":
        body = json.loads(str(docs[19]["body"]))
        body["detail"] = {"i": -1}
        b = canonical(body)
        docs[19].update(body=b.decode(), hash=chain_hash(str(docs[19]["prev_hash"]), b))
    elif tamper == "reorder":
        docs[24]["seq"], docs[25]["seq"] = 26, 25
    rewrite(db, docs)
    one = verify(db, key, batch=7)
    two = verify(db, key, batch=7, workers=2)
    assert (one.ok, one.kind, one.first_bad_seq) == (two.ok, two.kind, two.first_bad_seq)
    expected = {"none": None, "edit": 30, "delete_boundary": 21, "rehash_boundary": 20, "reorder": 25}[tamper]
    assert one.first_bad_seq == expected
