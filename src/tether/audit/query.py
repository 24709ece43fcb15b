"""Reading the chain: filtered pages, a task's story, erasable content, export, start-up recovery."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, update

from tether.audit import chain, keys
from tether.audit.model import Event
from tether.audit.results import ResultNamer
from tether.crypto import unseal
from tether.errors import NotFound, ValidationFailed
from tether.store.db import Database
from tether.store.schema.audit import audit_checkpoints, audit_events
from tether.types import rfc3339, utcnow

RECOVERY_TYPE = "audit.recovered"
ERASED_TYPE = "audit.content_erased"
MARKER_AFTER = 10_000


def normalise_ts(value: str) -> str:
    """An RFC 3339 instant in the chain's own form (so string order is time order)."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed("since must be an RFC 3339 date-time", field="since") from exc
    return rfc3339(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def _doc(body: str, h: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(body)
    doc["hash"] = h
    return doc


def query(
    db: Database, *, task_id: str | None = None, agent_id: str | None = None, person_id: str | None = None,
    type: str | None = None, since: str | None = None, after: int = 0, limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:  # fmt: skip
    """A page of records in chain order and the cursor (last seq) for the next one, or None."""
    t = audit_events.c
    where = {k: v for k, v in (("task_id", task_id), ("agent_id", agent_id), ("person_id", person_id),
                               ("type", type)) if v is not None}  # fmt: skip
    also = [t.ts >= normalise_ts(since)] if since is not None else []
    with db.read() as conn:
        rows = keys.select_keyed(conn, (t.seq, t.body, t.hash), where, after=after, also=also, limit=limit)
    docs = [_doc(r[1], r[2]) for r in rows]
    return docs, (int(rows[-1][0]) if len(rows) == limit else None)


def task_events(db: Database, task_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page, nxt = query(db, task_id=task_id, after=after, limit=1000)
        out.extend(page)
        if nxt is None:
            return out
        after = nxt


def tree(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, event) in depth-first order by parent_id; orphans (parent outside the set) are roots."""
    ids = {e["id"] for e in events}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for e in events:
        parent = e.get("parent_id") if e.get("parent_id") in ids else None
        children.setdefault(parent, []).append(e)
    out: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, e) for e in reversed(children.get(None, []))]
    while stack:
        depth, e = stack.pop()
        out.append((depth, e))
        stack.extend((depth + 1, c) for c in reversed(children.get(e["id"], [])))
    return out


def read_content(db: Database, key: bytes, event_id: str) -> dict[str, Any] | None:
    """The decrypted content of an event; None when it was erased. NotFound when none was kept."""
    t = audit_events.c
    with db.read() as conn:
        row = conn.execute(select(t.content, t.content_erased_at).where(t.id == event_id)).first()
    if row is None or (row[0] is None and row[1] is None):
        raise NotFound(f"no content is kept for event {event_id}")
    if row[0] is None:
        return None
    doc: dict[str, Any] = json.loads(unseal(key, bytes(row[0]), event_id.encode()))
    return doc


def erase_content(db: Database, event_id: str, *, actor: str, reason: str = "erasure request") -> int:
    """Erase an event's content (GDPR Art. 17): the blob is dropped, the chain keeps the digest. Audited."""
    t = audit_events.c
    with db.write() as conn:
        res = conn.execute(
            update(audit_events)
            .where(t.id == event_id, t.content.is_not(None))
            .values(content=None, content_erased_at=rfc3339(utcnow()))
        )
        if res.rowcount == 0:
            erased = conn.execute(select(t.seq).where(t.id == event_id, t.content_erased_at.is_not(None))).first()
            if erased is None:
                raise NotFound(f"no content is kept for event {event_id}")
            return 0
        rec = chain.append(
            conn, [Event(type=ERASED_TYPE, actor=actor, detail={"event_id": event_id, "reason": reason})]
        )
    return rec[0].seq


def recover(
    db: Database, *, live: frozenset[str] | set[str] = frozenset(), name_result: ResultNamer | None = None
) -> int:
    """Allowed calls with no `tool.completed` get one with outcome status "unknown" — unless the server
    instance that decided them is in `live` (its call may still be in flight: see `tether.audit.instances`).

    `name_result` (`tether.audit.results.namer`): an MCP call's outcome gets the id its result was given to
    the client under, so a later hop that names it as its parent still leads to an event in the log.

    Scans `policy.decided` / `tool.completed` events after the point the last `audit.recovered` marker
    resumes from, then appends the synthetic completions and a new marker in one transaction. The new
    marker resumes before the oldest call still open in a live instance, so that call is looked at again.
    The scan runs first without the write lock (the periodic sweep usually finds nothing, and must not
    hold up the audit writer meanwhile); only when there is something to write is it redone under it.
    """
    with db.read() as conn:
        if not _recovery(conn, live, name_result).write:
            return 0
    with db.write() as conn:
        chain.lock_chain(conn)
        found = _recovery(conn, live, name_result)
        if found.write:
            chain.append(conn, found.events)
        return found.count


@dataclass
class _Recovery:
    events: list[Event]
    count: int
    write: bool


def _recovery(conn: Any, live: frozenset[str] | set[str], name_result: ResultNamer | None) -> _Recovery:
    t = audit_events.c
    markers = keys.select_keyed(conn, (t.seq, t.body), {"type": RECOVERY_TYPE}, limit=1, descending=True)
    marker = markers[0] if markers else None
    start = 0
    if marker is not None:
        resume = orjson.loads(marker[1]).get("detail", {}).get("resume_after")
        start = int(resume) if isinstance(resume, int) else int(marker[0])
    decided: dict[str, tuple[int, dict[str, Any]]] = {}
    completed: set[str] = set()
    rows = keys.select_keyed(conn, (t.seq, t.type, t.body), {"type": ("policy.decided", "tool.completed")},
                             after=start)  # fmt: skip
    for seq, typ, body in rows:
        d = orjson.loads(body)
        if typ == "policy.decided":
            if d.get("decision") == "allow":
                decided[d["id"]] = (int(seq), d)
        elif d.get("parent_id"):
            completed.add(d["parent_id"])
    head, _ = chain.head(conn)
    resume_after = head
    events: list[Event] = []
    gone: set[str] = set()
    for eid, (seq, d) in decided.items():
        if eid in completed:
            continue
        instance = (d.get("detail") or {}).get("instance")
        if instance in live:
            resume_after = min(resume_after, seq - 1)  # still in flight, perhaps: look again next time
            continue
        gone.add(str(instance))
        named = None  # an MCP result's id was given to the client: its outcome takes that id
        if name_result is not None and (d.get("detail") or {}).get("enforcement") == "mcp":
            named = name_result(d["task_id"], eid)
        events.append(Event(
            id=named,
            type="tool.completed", actor="system", task_id=d["task_id"], trace_id=d["trace_id"], parent_id=eid,
            agent_id=d["agent_id"], person_id=d["person_id"], sponsor_id=d["sponsor_id"], action=d["action"],
            resource=d["resource"], request_digest=d["request_digest"], decision=d["decision"],
            approval_id=d["approval_id"], outcome={"status": "unknown"},
            detail={"recovered": True, "instance": instance},
        ))  # fmt: skip
    found = len(events)
    # A marker bounds the next scan; with nothing found it is written only once the scan grew long.
    write = bool(found) or resume_after - start > MARKER_AFTER
    if write:
        events.append(Event(type=RECOVERY_TYPE, detail={
            "scanned_after": start, "scanned_to": head, "resume_after": resume_after,
            "unknown_outcomes": found, "instances": sorted(gone),
        }))  # fmt: skip
    return _Recovery(events, found, write)


def _since_seq(conn: Any, since: str | None) -> int:
    if since is None:
        return 0
    row = conn.execute(
        select(audit_events.c.seq).where(audit_events.c.ts >= normalise_ts(since)).order_by(audit_events.c.seq).limit(1)
    ).first()
    return int(row[0]) - 1 if row is not None else 1 << 62


def _stream(db: Database, since: str | None, batch: int = 5000) -> Iterator[tuple[int, str, str]]:
    with db.read() as conn:
        last = _since_seq(conn, since)
    while True:
        with db.read() as conn:
            rows = conn.execute(
                select(audit_events.c.seq, audit_events.c.body, audit_events.c.hash)
                .where(audit_events.c.seq > last)
                .order_by(audit_events.c.seq)
                .limit(batch)
            ).all()
        if not rows:
            return
        for r in rows:
            yield int(r[0]), r[1], r[2]
        last = int(rows[-1][0])


def export_jsonl(db: Database, *, since: str | None = None) -> Iterator[str]:
    """One line per record (`{"record": …}`), each checkpoint right after the event it signs."""
    with db.read() as conn:
        cps = {
            int(r.seq): {"chain_id": r.chain_id, "seq": int(r.seq), "hash": r.hash, "ts": r.ts, "kid": r.kid,
                         "jws": r.jws}
            for r in conn.execute(select(audit_checkpoints))
        }  # fmt: skip
    for seq, body, h in _stream(db, since):
        yield '{"record":' + body[:-1] + ',"hash":"' + h + '"}}\n'
        cp = cps.get(seq)
        if cp is not None:
            yield json.dumps({"checkpoint": cp}, sort_keys=True) + "\n"


#: OCSF API Activity (class 6003): activity_id by event type (1 create, 2 read, 3 update, 4 delete, 99 other).
_ACTIVITY = {"tool.requested": 99, "policy.decided": 99, "tool.completed": 99, "token.issued": 1,
             "token.revoked": 4, "task.started": 1, "task.ended": 4}  # fmt: skip


def ocsf(doc: dict[str, Any]) -> dict[str, Any]:
    """One record as an OCSF 1.3 API Activity event (mapping in docs/audit.md)."""
    activity = _ACTIVITY.get(doc["type"], 99)
    ts = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00"))
    decision = doc.get("decision")
    outcome = doc.get("outcome") or {}
    status_id = 2 if decision in ("deny", "approval_required") else (1 if decision == "allow" else 0)
    resource = doc.get("resource") or {}
    return {
        "class_uid": 6003, "class_name": "API Activity", "category_uid": 6, "category_name": "Application Activity",
        "activity_id": activity, "type_uid": 600300 + activity, "severity_id": 1, "time": int(ts.timestamp() * 1000),
        "status_id": status_id, "status": decision or outcome.get("status"),
        "message": doc["type"],
        "metadata": {"version": "1.3.0", "uid": doc["id"], "sequence": doc["seq"], "log_name": "audit",
                     "correlation_uid": doc.get("task_id"), "product": {"name": "Tether", "vendor_name": "Tether"}},
        "actor": {"user": {"uid": doc.get("person_id")}, "app_uid": doc.get("agent_id"),
                  "invoked_by": doc.get("actor")},
        "api": {"operation": doc.get("action") or doc["type"], "request": {"uid": doc.get("request_digest")}},
        "resources": [{"uid": resource.get("id"), "type": resource.get("type"), "owner": {"uid": resource.get("owner")},
                       "data_classification": resource.get("sensitivity")}] if resource else [],
        "unmapped": {"trace_id": doc.get("trace_id"), "parent_id": doc.get("parent_id"),
                     "policy_ids": doc.get("policy_ids"), "approval_id": doc.get("approval_id"),
                     "prompt_digest": doc.get("prompt_digest"), "outcome": doc.get("outcome"),
                     "prev_hash": doc["prev_hash"], "hash": doc["hash"], "detail": doc.get("detail")},
    }  # fmt: skip


def export_ocsf(db: Database, *, since: str | None = None) -> Iterator[str]:
    for _seq, body, h in _stream(db, since):
        yield json.dumps(ocsf(_doc(body, h)), sort_keys=True) + "\n"


__all__ = [
    "ERASED_TYPE", "RECOVERY_TYPE", "erase_content", "export_jsonl", "export_ocsf", "normalise_ts", "ocsf", "query",
    "read_content", "recover", "task_events", "tree",
]  # fmt: skip
