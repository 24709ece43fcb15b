"""Audit benchmark: durable events/s through AuditLog beside plain inserts of the same rows, and verification.

    python bench/audit.py [--quick] [--postgres ADMIN_URL]

For 1, 8 and 64 concurrent writers (asyncio tasks calling `await audit.record(event)`,
each waiting until its event is durable), it measures the chained log and, in the same
run with the same group-commit batching, a "plain" writer that inserts the same rows
(same canonical JSON bodies) without the chain: no sequencer lock, no head read, no hash.
Then it verifies the whole chain and reports events/s. With `--postgres` (or
TETHER_TEST_DATABASE_URL) it also runs on a scratch PostgreSQL database it creates and drops.

Prints a table, then as its LAST line one JSON object: `sqlite_events_per_s_64`,
`chain_overhead_ratio` (plain ÷ chained events/s at 64 writers on SQLite) and
`verify_events_per_s`. Goals: ≥ 20,000, ≤ 1.3, ≥ 200,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete

from tether.audit.chain import _INSERT, _INSERT_HEAD, canonical_fast, event_id, insert_rows
from tether.audit.log import AuditLog, _Job
from tether.audit.model import Event
from tether.audit.verify import verify
from tether.store.db import Database
from tether.store.migrate import upgrade
from tether.store.schema.audit import audit_events
from tether.types import rfc3339, utcnow


class PlainLog(AuditLog):
    """The same writer thread and batching, inserting the same rows without the chain."""

    _next = 0

    def _commit(self, jobs: list[_Job], *, here: asyncio.AbstractEventLoop | None = None) -> None:
        rows = []
        for j in jobs:
            for e in j.events:
                PlainLog._next += 1
                seq, eid, ts = PlainLog._next, e.id or event_id(), rfc3339(utcnow())
                body = canonical_fast(e.body(seq=seq, event_id=eid, ts=ts, prev_hash="")).decode()
                rows.append((seq, eid, ts, e.type, e.task_id, e.agent_id, e.person_id, body, "", "", None))
        with self.db.raw_write(
            wait=here is None
        ) as cur:  # the writer's own path: one DB-API transaction, multi-row inserts
            if self.db.is_sqlite:
                insert_rows(cur, _INSERT_HEAD, len(rows[0]), rows)
            else:
                cur.executemany(_INSERT.format(marks=", ".join(["%s"] * len(rows[0]))), rows)
        from tether.audit.model import Receipt

        self._settle(jobs, [Receipt(r[0], r[1], "") for r in rows], None, here=here)


def event(i: int) -> Event:
    return Event(
        type="policy.decided",
        actor="agt_bench",
        task_id="tsk_bench",
        agent_id="agt_bench",
        person_id="prs_bench",
        action="mail:send",
        resource={"type": "message", "id": f"m{i}", "system": "graph", "sensitivity": "internal", "owner": "prs_bench"},
        decision="allow",
        policy_ids=("least-privilege",),
        request_digest="a" * 64,
        detail={"decision_id": "dec_x", "reasons": ["permit"], "enforcement": "http"},
    )


async def drive(log: AuditLog, writers: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * writers

    async def writer(k: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            await log.record(event(i))
            i += 1
        counts[k] = i

    t0 = time.perf_counter()
    await asyncio.gather(*(writer(k) for k in range(writers)))
    return sum(counts) / (time.perf_counter() - t0)


def measure(url: str, writers: int, seconds: float, plain: bool) -> float:
    db = Database(url)
    try:
        with db.write() as conn:
            conn.execute(delete(audit_events))
        PlainLog._next = 0
        log = (PlainLog if plain else AuditLog)(db, digest_key=b"k" * 32)
        try:
            return asyncio.run(drive(log, writers, seconds))
        finally:
            log.close()
    finally:
        db.dispose()


def fill_and_verify(url: str, n: int) -> tuple[float, int]:
    db = Database(url)
    try:
        with db.write() as conn:
            conn.execute(delete(audit_events))
        log = AuditLog(db, digest_key=b"k" * 32)
        try:
            for start in range(0, n, 5000):
                log.record_sync([event(i) for i in range(start, min(n, start + 5000))])
        finally:
            log.close()
        best = 0.0
        for workers in (1, os.cpu_count() or 1, 1, os.cpu_count() or 1):
            r = verify(db, None, workers=workers)
            assert r.ok, r
            rate = r.events / r.seconds
            print(f"verify {r.events:,} events, {workers} process(es): {rate:,.0f} events/s")
            best = max(best, rate)
        return best, r.events
    finally:
        db.dispose()


def run_backend(name: str, url: str | Any, quick: bool, out: dict[str, Any]) -> None:
    seconds = 2.0 if quick else 6.0
    for writers in (1, 8, 64):
        # interleave chained and plain runs so machine load hits both alike
        # `url` may be a callable giving a fresh database per measurement (SQLite: a copy of a migrated
        # template), so no run inherits the free pages and WAL of the rows the previous one deleted
        chained = measure(url() if callable(url) else url, writers, seconds, plain=False)
        plain = measure(url() if callable(url) else url, writers, seconds, plain=True)
        print(f"{name:<10} {writers:>7} {chained:>16,.0f} {plain:>16,.0f} {plain / chained:>9.2f}")
        out[(name, writers)] = (chained, plain)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (< 60 s)")
    ap.add_argument("--postgres", default=os.environ.get("TETHER_TEST_DATABASE_URL"), help="PostgreSQL admin URL")
    args = ap.parse_args()
    results: dict[Any, Any] = {}
    print(f"{'backend':<10} {'writers':>7} {'chained ev/s':>16} {'plain ev/s':>16} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        upgrade(f"sqlite:///{template}")
        copies = iter(range(1_000_000))

        def fresh() -> str:
            path = Path(tmp) / f"run{next(copies)}.db"
            shutil.copyfile(template, path)
            return f"sqlite:///{path}"

        run_backend("sqlite", fresh, args.quick, results)
        url = fresh()
        n = 200_000 if args.quick else 1_000_000
        verify_rate, verified = fill_and_verify(url, n)
    pg_rate = None
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin_url = (
            args.postgres
            if "+psycopg" in args.postgres
            else args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        )
        scratch = f"tether_bench_{secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{scratch}"'))
            try:
                pg = make_url(admin_url).set(database=scratch).render_as_string(hide_password=False)
                upgrade(pg)
                run_backend("postgresql", pg, args.quick, results)
                pg_rate, _ = fill_and_verify(pg, 50_000 if args.quick else 200_000)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        except Exception as exc:  # noqa: BLE001 — PostgreSQL is optional here
            print(f"postgresql skipped: {exc!r}")
        finally:
            admin.dispose()
    print(f"verification (sqlite): {verify_rate:,.0f} events/s over {verified:,} events")
    if pg_rate is not None:
        print(f"verification (postgresql): {pg_rate:,.0f} events/s")
    chained64, plain64 = results[("sqlite", 64)]
    figures = {
        "sqlite_events_per_s_64": round(chained64),
        "chain_overhead_ratio": round(plain64 / chained64, 3),
        "verify_events_per_s": round(verify_rate),
    }
    for w in (1, 8, 64):
        if ("postgresql", w) in results:
            figures[f"postgresql_events_per_s_{w}"] = round(results[("postgresql", w)][0])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
