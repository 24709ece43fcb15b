"""Approvals on the hot path: break-glass lookup per call, and the cost of a one-time grant.

    python bench/approvals.py [--quick]

Figures: `breakglass_for` per call with no grant and with 50 live grants (baseline: a dict
lookup), and `consume` (conditional UPDATE + approval.used, one SQLite write transaction with
fsync) against a baseline write transaction appending one audit event. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.approvals_world import make_world, new_task, pending

from tether.api.wiring import build_services
from tether.audit import chain
from tether.audit.model import Event
from tether.config import Settings


def per_call_ns(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_lookup = 200_000 if args.quick else 2_000_000
    n_consume = 30 if args.quick else 200

    svc = build_services(Settings(data_dir=Path(tempfile.mkdtemp(prefix="tether-bench-"))))
    w = make_world(svc)
    a = svc.approvals
    assert a is not None

    table = {"agt_x": 1}
    base_ns = per_call_ns(lambda: table.get("agt_y"), n_lookup)
    none_ns = per_call_ns(lambda: a.breakglass_for(w.agent, w.task), n_lookup)
    for _ in range(49):
        other = svc.identity.create_agent("system", name="o", sponsor_id=w.sponsor, owner_team="t", purpose="p",
                                          ceiling=["mail:read"])  # fmt: skip
        t = new_task(svc, other.id, w.person)
        a.start_breakglass_sync(w.breakglass, agent_id=other.id, task_id=t, justification="bench grant x", duration=600)
    a.start_breakglass_sync(w.breakglass, agent_id=w.agent, task_id=w.task, justification="bench grant y", duration=600)
    a._notify_use = lambda bg, now: None  # type: ignore[method-assign]  # measure the lookup, not notices
    fifty_ns = per_call_ns(lambda: a.breakglass_for(w.agent, w.task), n_lookup)

    def baseline_write() -> None:
        with svc.db.write() as conn:
            chain.append(conn, [Event(type="bench.baseline")])

    base_ms, consume_ms = [], []
    for _ in range(n_consume):
        t0 = time.perf_counter()
        baseline_write()
        base_ms.append((time.perf_counter() - t0) * 1000)
        ap_ = asyncio.run(pending(w))
        a.decide_sync(w.sponsor, ap_.id, approve=True, reason="bench")
        t0 = time.perf_counter()
        a.consume_sync(ap_.id, task_id=w.task, request_digest=ap_.request_digest)
        consume_ms.append((time.perf_counter() - t0) * 1000)
    svc.close()

    b_med, c_med = statistics.median(base_ms), statistics.median(consume_ms)
    rows = [
        ("dict.get baseline", f"{base_ns:.0f} ns", ""),
        ("breakglass_for, no grant", f"{none_ns:.0f} ns", f"{none_ns / base_ns:.1f}x"),
        ("breakglass_for, 50 grants", f"{fifty_ns:.0f} ns", f"{fifty_ns / base_ns:.1f}x"),
        ("write txn + 1 audit event (baseline)", f"{b_med:.2f} ms", ""),
        ("consume (UPDATE + approval.used)", f"{c_med:.2f} ms", f"{c_med / b_med:.2f}x"),
    ]
    print(f"{'measure':40} {'median':>12} {'ratio':>8}")
    for name, v, r in rows:
        print(f"{name:40} {v:>12} {r:>8}")
    print(json.dumps({
        "breakglass_for_ns_no_grant": round(none_ns, 1), "breakglass_for_ns_50_grants": round(fifty_ns, 1),
        "dict_get_ns": round(base_ns, 1), "consume_ms_p50": round(c_med, 3), "baseline_write_ms_p50": round(b_med, 3),
        "consume_ratio": round(c_med / b_med, 2), "quick": args.quick,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
