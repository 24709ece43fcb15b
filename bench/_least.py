"""The audit part of the benchmarks' "least durable gateway": a call's events chained and committed with fsync.

What any gateway keeping Tether's contract must do before it forwards a call, with nothing of Tether in it:
each event's sorted-key JSON hashed (SHA-256) after the previous hash, and the events committed in one SQLite
transaction (WAL, `synchronous=FULL`) on the caller's thread — the event loop, as Tether commits.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from typing import Any

import orjson

_INSERT = "INSERT INTO events (seq, id, type, body, prev_hash, hash) VALUES "


class DurableChain:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, type TEXT, "
                        "body TEXT, prev_hash TEXT, hash TEXT)")  # fmt: skip
        self.seq, self.prev = 0, "0" * 64
        self.calls = 0
        #: the previous call's outcome, chained with the next call's events (as Tether's lazy outcomes ride)
        self.pending: list[dict[str, Any]] = []

    def decide(self, task: str, action: str | None, resource: dict[str, Any], decision: str) -> str:
        """Chain and commit a call's `tool.requested` and `policy.decided` (with any pending outcome); the
        decision event's id."""
        self.calls += 1
        n = self.calls
        events = [*self.pending,
                  {"id": f"evt_{n}_r", "type": "tool.requested", "task_id": task, "action": action,
                   "resource": resource},
                  {"id": f"evt_{n}_d", "type": "policy.decided", "task_id": task, "decision": decision,
                   "parent_id": f"evt_{n}_r"}]  # fmt: skip
        self.pending = []
        self._commit(events)
        return f"evt_{n}_d"

    def completed(self, task: str, decided: str, outcome: dict[str, Any]) -> None:
        """The call's `tool.completed`, committed with the next call's events."""
        self.pending.append({"id": decided[:-1] + "c", "type": "tool.completed", "task_id": task,
                             "parent_id": decided, "outcome": outcome})  # fmt: skip

    def _commit(self, events: list[dict[str, Any]]) -> None:
        seq, prev, rows = self.seq, self.prev, []
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        for ev in events:
            seq += 1
            body = orjson.dumps({**ev, "seq": seq, "ts": now, "prev_hash": prev, "v": 1}, option=orjson.OPT_SORT_KEYS)
            digest = hashlib.sha256(prev.encode() + body).hexdigest()
            rows += (seq, ev["id"], ev["type"], body.decode(), prev, digest)
            prev = digest
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(_INSERT + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(events)), rows)
        self.db.execute("COMMIT")
        self.seq, self.prev = seq, prev


async def lifespan(scope: dict[str, Any], receive: Any, send: Any, state: dict[str, Any], journal: str) -> bool:
    """Serve an ASGI lifespan `scope` for a least gateway (its chain in `state["chain"]`, its upstream client
    in `state["c"]`); False when `scope` is a request."""
    if scope["type"] != "lifespan":
        return False
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            import aiohttp

            state["chain"] = DurableChain(journal)
            state["c"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return True
