"""`tether policy replay`: what would a candidate bundle have decided on recorded requests?

The enforcement step keeps each call's full decision input in the audit content store
(`input`, keyed by the `tool.requested` event id). Replay walks `policy.decided` events,
rebuilds each request, decides it with the candidate bundle under the same lifted forbids,
and reports every decision whose effect would differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tether.audit import keys
from tether.errors import NotFound
from tether.policy.bundle import Bundle
from tether.policy.model import request_from_input
from tether.store.schema.audit import audit_events


def replay_decisions(
    db: Any,
    engine: Any,
    candidate: Bundle,
    *,
    content: Callable[[str], dict[str, Any] | None],
    since: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Re-decide recorded requests under `candidate`; `content(event_id)` reads the content store."""
    from tether.policy.engine import PolicyEngine

    trial = PolicyEngine(None, agent_lookup=engine._agent_lookup, person_lookup=engine._person_lookup)
    trial._bundle = candidate
    e = audit_events.c
    changes: list[dict[str, Any]] = []
    total = 0
    with db.read() as conn:
        rows = keys.select_keyed(conn, (e.id, e.ts, e.body), {"type": "policy.decided"},
                                 also=[e.ts >= since] if since else ())  # fmt: skip
    for row in rows:
        body = json.loads(row.body)
        try:
            stored = content(body.get("parent_id") or "")
        except NotFound:  # nothing was kept for this call (an AuthZEN decision, or erased)
            continue
        if not stored or "input" not in stored:
            continue
        total += 1
        req = request_from_input(stored["input"])
        lifted = frozenset(body.get("detail", {}).get("lifted") or ())
        d = trial.decide(req, lifted_forbids=lifted)
        if d.effect.value != body.get("decision"):
            changes.append({
                "event_id": row.id, "ts": row.ts, "action": req.action,
                "resource": f"{req.resource.type}::{req.resource.id}",
                "was": body.get("decision"), "now": d.effect.value, "policy_ids": list(d.policy_ids),
            })  # fmt: skip
    return changes, total


__all__ = ["replay_decisions"]
