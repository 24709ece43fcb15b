"""Read models for the console: dashboard figures, tasks, a task's event chain and its check."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from tether.audit import keys
from tether.audit.chain import chain_hash
from tether.store.db import Database
from tether.store.schema.audit import audit_events
from tether.store.schema.identity import tasks
from tether.types import rfc3339, utcnow

#: how many decisions the dashboard reads at most (a window, not the whole log)
DASHBOARD_WINDOW = 20_000


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    #: 0..100, the bar's length relative to the largest
    pct: float


@dataclass
class Dashboard:
    since: datetime
    calls: int = 0
    allowed: int = 0
    denials: int = 0
    approvals_required: int = 0
    pending: int = 0
    open_reviews: int = 0
    active_breakglass: int = 0
    hourly: list[Bar] = field(default_factory=list)
    hourly_denied: list[Bar] = field(default_factory=list)
    top_agents: list[Bar] = field(default_factory=list)


def _bars(pairs: list[tuple[str, int]]) -> list[Bar]:
    top = max((v for _, v in pairs), default=0) or 1
    return [Bar(label, value, round(100.0 * value / top, 1)) for label, value in pairs]


def dashboard(db: Database, *, hours: int = 24) -> Dashboard:
    now = utcnow()
    since = now - timedelta(hours=hours)
    d = Dashboard(since=since)
    since_ts = rfc3339(since)
    with db.read() as conn:
        e = audit_events.c
        # a refused approval retry (replayed, expired, other request) is a call refused before any policy ran
        rows = keys.select_keyed(
            conn, (e.ts, e.agent_id, e.type, e.body), {"type": ("policy.decided", "approval.refused")},
            also=[e.ts >= since_ts], limit=DASHBOARD_WINDOW, descending=True,
        )  # fmt: skip
    per_hour: Counter[int] = Counter()
    denied_hour: Counter[int] = Counter()
    per_agent: Counter[str] = Counter()
    for ts, agent_id, kind, body in rows:
        effect = "deny" if kind == "approval.refused" else json.loads(body).get("decision")
        hour = int((now - datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds() // 3600)
        d.calls += 1
        per_hour[hour] += 1
        per_agent[agent_id or "?"] += 1
        if effect == "allow":
            d.allowed += 1
        elif effect == "deny":
            d.denials += 1
            denied_hour[hour] += 1
        elif effect == "approval_required":
            d.approvals_required += 1
    labels = [f"-{h}h" for h in range(hours - 1, -1, -1)]
    d.hourly = _bars([(labels[i], per_hour[hours - 1 - i]) for i in range(hours)])
    d.hourly_denied = _bars([(labels[i], denied_hour[hours - 1 - i]) for i in range(hours)])
    d.top_agents = _bars(per_agent.most_common(8))
    return d


def list_tasks(db: Database, *, limit: int = 100, agent_id: str | None = None) -> list[dict[str, Any]]:
    q = select(tasks).order_by(tasks.c.started_at.desc()).limit(limit)
    if agent_id:
        q = q.where(tasks.c.agent_id == agent_id)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def get_task(db: Database, task_id: str) -> dict[str, Any] | None:
    with db.read() as conn:
        r = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
    return dict(r._mapping) if r else None


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    scope: str
    first_bad_seq: int | None = None
    detail: str = ""


def timeline(db: Database, task_id: str, *, limit: int = 2000) -> tuple[list[dict[str, Any]], ChainCheck]:
    """The task's events in chain order, each checked: its hash, and its link to the record before it."""
    with db.read() as conn:
        rows = keys.select_keyed(conn, list(audit_events.c), {"task_id": task_id}, limit=limit)
        prev_seqs = [r.seq - 1 for r in rows if r.seq > 1]
        prev_hash: dict[int, str] = {}
        if prev_seqs:
            q = select(audit_events.c.seq, audit_events.c.hash).where(audit_events.c.seq.in_(prev_seqs))
            prev_hash = {int(seq): str(h) for seq, h in conn.execute(q)}
    events: list[dict[str, Any]] = []
    bad: int | None = None
    for r in rows:
        body = json.loads(r.body)
        intact = (
            chain_hash(r.prev_hash, r.body.encode()) == r.hash
            and body.get("seq") == r.seq
            and body.get("prev_hash") == r.prev_hash
            and (r.seq == 1 or prev_hash.get(r.seq - 1) == r.prev_hash)
        )
        if not intact and bad is None:
            bad = int(r.seq)
        body["hash"] = r.hash
        body["intact"] = intact
        events.append(body)
    check = ChainCheck(
        ok=bad is None, checked=len(rows), scope="task", first_bad_seq=bad,
        detail="each event's hash and its link to the previous record",
    )  # fmt: skip
    return events, check


def event_counts(db: Database, task_id: str) -> int:
    with db.read() as conn:
        return keys.count_keyed(conn, {"task_id": task_id})


__all__ = ["Bar", "ChainCheck", "Dashboard", "dashboard", "event_counts", "get_task", "list_tasks", "timeline"]
