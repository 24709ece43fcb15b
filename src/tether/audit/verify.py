"""Streaming verification of the whole chain, checkpoints included.

Rows are read in batches ordered by `seq` (constant memory apart from the checkpoint
index, one small entry per checkpoint). For each row: `seq` continues the previous one,
`hash` = SHA-256(prev_hash ‖ body), the body's own seq/id/prev_hash and the indexed columns
(id, ts, type, task_id, agent_id, person_id) agree with it, and `prev_hash` is the previous
row's `hash`. A row the lookup keys cover (`tether.audit.keys`: every seq up to the last keyed
one) must be there with the same type, task, agent and person, since queries find events through
them: a key edited or removed would hide an event from a task's story. Every checkpoint (database
and external file) must carry a valid EdDSA signature by the audit key, and the chain at its
`seq` must have its `hash`; a chain shorter than the latest checkpoint is truncated. The first
problem found is reported.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from tether.audit.checkpoints import AuditKey, read_file, verify_jws
from tether.audit.model import GENESIS_HASH
from tether.store.db import Database

BATCH = 20_000
PARALLEL_MIN = 100_000
LOOKAHEAD = 64

#: Kinds of tamper verification names.
KINDS = (
    "edited", "deleted", "inserted", "reordered", "truncated", "checkpoint_forged", "checkpoint_mismatch",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    first_bad_seq: int | None = None
    kind: str | None = None
    detail: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Bad(Exception):
    def __init__(self, seq: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.seq, self.kind, self.detail = seq, kind, detail


def _rows(
    db: Database, batch: int, lo: int = 1, hi: int = 1 << 62, keyed: int = 0
) -> Iterator[tuple[Sequence[Any], list[Any]]]:
    """Batches of raw rows with lo ≤ seq ≤ hi in seq order (keyset pagination, driver cursor, no per-row wrapping),
    each with the lookup keys of its seq range up to `keyed` ((seq, type, task, agent, person), in seq order)."""
    last = lo - 1
    with db.read() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        mark = "?" if db.is_sqlite else "%s"
        # the body as bytes straight from the store: no UTF-8 decode and re-encode per row
        # (on PostgreSQL text is cheaper than bytea, whose text-protocol hex form must be decoded)
        raw_body = "CAST(body AS BLOB)" if db.is_sqlite else "body"
        cols = f"seq, id, ts, type, task_id, agent_id, person_id, {raw_body}, prev_hash, hash"
        sql = f"SELECT {cols} FROM audit_events WHERE seq > {mark} AND seq <= {int(hi)} ORDER BY seq LIMIT {int(batch)}"  # noqa: S608
        keys_sql = (
            "SELECT seq, type, task_id, agent_id, person_id FROM audit_event_keys "  # noqa: S608 — placeholders only
            f"WHERE seq >= {mark} AND seq <= {mark} ORDER BY seq"
        )
        cur = raw.cursor()
        try:
            while True:
                cur.execute(sql, (last,))
                rows = cur.fetchall()
                if not rows:
                    return
                cur.execute(keys_sql, (rows[0][0], min(rows[-1][0], keyed)))
                yield rows, list(cur.fetchall())
                last = int(rows[-1][0])
        finally:
            cur.close()


def _checkpoints(db: Database, key: AuditKey | None, file: Path | None) -> dict[int, str]:
    """seq → hash of every authentic checkpoint; raises _Bad on a forged or conflicting one."""
    from sqlalchemy import select

    from tether.store.schema.audit import audit_checkpoints

    index: dict[int, str] = {}

    def admit(seq: Any, h: Any, jws: Any, where: str) -> None:
        if not isinstance(seq, int) or not isinstance(jws, str):
            raise _Bad(int(seq) if isinstance(seq, int) else 0, "checkpoint_forged", f"malformed checkpoint in {where}")
        payload = verify_jws(key, jws) if key is not None else None
        if payload is None or payload.get("seq") != seq or payload.get("hash") != h:
            raise _Bad(seq, "checkpoint_forged", f"checkpoint at seq {seq} in {where} is not signed by the audit key")
        if index.get(seq, h) != h:
            raise _Bad(seq, "checkpoint_forged", f"checkpoints at seq {seq} disagree between the database and {where}")
        index[seq] = h

    with db.read() as conn:
        for row in conn.execute(
            select(audit_checkpoints.c.seq, audit_checkpoints.c.hash, audit_checkpoints.c.jws).order_by(
                audit_checkpoints.c.seq
            )
        ):
            admit(int(row[0]), row[1], row[2], "the database")
    if file is not None:
        for doc in read_file(file):
            admit(doc.get("seq"), doc.get("hash"), doc.get("jws"), file.name)
    return index


@dataclass(slots=True)
class _Span:
    """What one pass over lo..hi found: the first problem (and the row it was seen at) and its boundary hashes."""

    lo: int
    bad: tuple[int, str, str] | None = None
    bad_row: int = 0
    first_ph: str | None = None
    last_seq: int = 0
    last_h: str = GENESIS_HASH
    count: int = 0


def _scan(db: Database, lo: int, hi: int, index: dict[int, str], batch: int, prev: str | None, keyed: int) -> _Span:
    """Check rows lo..hi; `prev` is the hash before lo (None: the caller checks that link); rows up to `keyed`
    must have their lookup keys."""
    span = _Span(lo, last_seq=lo - 1)
    expected = lo
    sha256 = hashlib.sha256
    loads = orjson.loads
    try:
        for rows, found_keys in _rows(db, batch, lo, hi, keyed):
            key_bad = _key_mismatch(rows, found_keys, keyed)
            if span.first_ph is None:
                span.first_ph = rows[0][8]
                if prev is None:
                    prev = span.first_ph
            for i, (seq, eid, ts, typ, task, agent, person, body, ph, h) in enumerate(rows):
                if seq != expected:
                    raise _Bad(expected, "deleted", f"event seq {expected} is missing (next stored is {seq})")
                tb = type(body)
                bb = body if tb is bytes else (body.encode() if tb is str else bytes(body))
                if sha256(ph.encode() + bb).hexdigest() != h:
                    raise _Bad(seq, "edited", f"event seq {seq}: stored hash does not match its content")
                d = loads(bb)
                if d["seq"] != seq:
                    _misplaced(seq, d["seq"], rows[i + 1 : i + 1 + LOOKAHEAD])
                if (d["prev_hash"], d["id"], d["ts"], d["type"], d["task_id"], d["agent_id"], d["person_id"]) != (
                    ph, eid, ts, typ, task, agent, person,
                ):  # fmt: skip
                    raise _Bad(seq, "edited", f"event seq {seq}: an indexed column differs from the hashed record")
                if seq == key_bad:
                    raise _Bad(seq, "edited", f"event seq {seq}: its lookup keys are missing or differ from the record")
                if ph != prev:
                    bad = max(seq - 1, 1)
                    raise _Bad(bad, "edited", f"the link into seq {seq} is broken: seq {bad} was changed and re-hashed")
                if seq in index and index[seq] != h:
                    raise _Bad(seq, "checkpoint_mismatch", f"the chain at seq {seq} differs from its signed checkpoint")
                prev = h
                span.last_seq, span.last_h = seq, h
                expected += 1
            span.count += len(rows)
        if span.first_ph is None and hi < 1 << 62:
            raise _Bad(lo, "deleted", f"events {lo}..{hi} are missing")
    except _Bad as bad:
        span.bad, span.bad_row = (bad.seq, bad.kind, bad.detail), expected
    return span


def _key_mismatch(rows: Sequence[Any], found: list[Any], keyed: int) -> int | None:
    """The first seq among `rows` (up to `keyed`) whose lookup keys are missing or differ from its columns, or None.
    Intact keys are one list comparison; only a mismatch is looked at row by row."""
    expected = [(r[0], r[3], r[4], r[5], r[6]) for r in rows if r[0] <= keyed]
    if found == expected:
        return None
    have = {k[0]: k for k in found}
    return next((e[0] for e in expected if have.get(e[0]) != e), None)


def _scan_url(url: str, lo: int, hi: int, index: dict[int, str], batch: int, keyed: int) -> _Span:
    db = Database(url)
    try:
        return _scan(db, lo, hi, index, batch, None, keyed)
    finally:
        db.dispose()


def _spans(db: Database, index: dict[int, str], batch: int, workers: int) -> list[_Span]:
    from sqlalchemy import func, select

    from tether.store.schema.audit import audit_event_keys, audit_events

    with db.read() as conn:
        top = int(conn.execute(select(func.max(audit_events.c.seq))).scalar() or 0)
        keyed = int(conn.execute(select(func.max(audit_event_keys.c.seq))).scalar() or 0)
    if workers <= 1 or top < PARALLEL_MIN:
        return [_scan(db, 1, 1 << 62, index, batch, GENESIS_HASH, keyed)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    step = -(-top // workers)
    bounds = [(lo, min(lo + step - 1, top)) for lo in range(1, top + 1, step)]
    bounds[-1] = (bounds[-1][0], 1 << 62)  # the last span also sees anything appended meanwhile
    with ProcessPoolExecutor(len(bounds), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_scan_url, db.url, lo, hi, index, batch, keyed) for lo, hi in bounds]
        return [f.result() for f in futures]


def verify(
    db: Database,
    key: AuditKey | None,
    *,
    checkpoint_file: Path | None = None,
    batch: int = BATCH,
    key_error: str | None = None,
    workers: int = 1,
) -> VerifyResult:
    """Verify the whole chain; `key` is the audit key (None: no checkpoint can be authentic).

    `workers` > 1 splits long chains (≥ PARALLEL_MIN events) into seq ranges checked by forked
    processes; the links between ranges are checked here, so the result is the same.
    """
    if key_error is not None:
        return VerifyResult(False, 0, 0, GENESIS_HASH, 0, 0, "checkpoint_forged", f"audit key: {key_error}")
    started = time.perf_counter()
    count, cps, head, prev = 0, 0, 0, GENESIS_HASH
    try:
        index = _checkpoints(db, key, checkpoint_file)
        cps = len(index)
        for span in _spans(db, index, batch, workers):
            if span.bad is not None and span.bad_row == span.lo:
                _raise(span.bad, index)
            if span.lo > 1 and span.first_ph is not None and span.first_ph != prev:
                bad = span.lo - 1
                raise _Bad(bad, "edited", f"the link into seq {span.lo} is broken: seq {bad} was changed and re-hashed")
            if span.bad is not None:
                count += span.count
                _raise(span.bad, index)
            count += span.count
            head, prev = span.last_seq, span.last_h
        latest = max(index, default=0)
        if latest > head:
            raise _Bad(
                head + 1, "truncated", f"the chain ends at seq {head} but a signed checkpoint covers seq {latest}"
            )
        past = _keyed_past(db)
        if past is not None:  # keys are written only for rows that exist: these were removed (or keys planted)
            raise _Bad(past, "truncated", f"the chain ends before seq {past}, which its lookup keys name")
    except _Bad as bad:
        return VerifyResult(False, count, head, prev, cps, bad.seq, bad.kind, bad.detail, time.perf_counter() - started)
    return VerifyResult(True, count, head, prev, cps, seconds=time.perf_counter() - started)


def _keyed_past(db: Database) -> int | None:
    """The first seq the lookup keys name that the chain has not reached, or None. Planted there, a key would take
    over the event that later gets that seq (hiding it from its task), or stop the writer keying at all. (The
    writer keys only rows of its own transaction, so a key is never ahead of the chain it reads.)"""
    from sqlalchemy import func, select

    from tether.store.schema.audit import audit_event_keys, audit_events

    k = audit_event_keys.c
    top = select(func.coalesce(func.max(audit_events.c.seq), 0)).scalar_subquery()
    with db.read() as conn:
        return conn.execute(select(func.min(k.seq)).where(k.seq > top)).scalar()


def _raise(bad: tuple[int, str, str], index: dict[int, str]) -> None:
    seq, kind, detail = bad
    if kind == "checkpoint_mismatch":  # rewritten somewhere after the last checkpoint that still matched
        good = max((s for s in index if s < seq), default=0)
        raise _Bad(good + 1, kind, f"{detail}: rewritten after seq {good}")
    raise _Bad(seq, kind, detail)


def _misplaced(seq: int, body_seq: int, ahead: Sequence[Any]) -> None:
    if body_seq < seq:
        raise _Bad(seq - 1, "inserted", f"seq {seq} holds event {body_seq}: an event was inserted before it")
    for row in ahead:
        if orjson.loads(row[7] if isinstance(row[7], bytes | str) else bytes(row[7]))["seq"] == seq:
            raise _Bad(seq, "reordered", f"seq {seq} holds event {body_seq}, which was moved")
    raise _Bad(seq, "deleted", f"seq {seq} holds event {body_seq}: events were deleted and renumbered")


__all__ = ["KINDS", "VerifyResult", "verify"]
