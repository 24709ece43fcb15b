"""Policy decision cost: Tether's decide() on sliced, pre-parsed sets vs raw unsliced cedarpy.

For the default pack and synthetic bundles of 200 and 1,000 policies (per-tool permits plus a
few forbids, the shape of BASELINES.md §1a), measure in the same run:
  - tether:  PolicyEngine.decide(req) — code checks, cached entities, slice, obligations, and
    Cedar evaluating the slice every time (the engine's reused answers are forgotten first)
  - raw:     cedarpy.is_authorized(req, PolicySet(whole bundle), entities) — no slicing
  - new resource: decide() where every call names a resource not seen before, so the
    pre-parsed entity graph cannot be reused (the cache-miss path: a fresh mail message each call)
  - approval: decide() on a request a forbid holds (confidential file shared outside)
  - reused: decide() on the same question again, Cedar's earlier answer reused
Prints a table, then one JSON line with p50_us_default, p99_us_default, p50_us_1000,
p99_us_1000, raw_unsliced_p50_us_1000 (and the 200, new-resource, approval and reused figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import cedarpy

from tether.policy import DecisionRequest, PolicyEngine, Resource

AGENT = SimpleNamespace(id="agt_bench", status="active", mode="executing", review_due=date.today() + timedelta(days=30),
                        sponsor_id="per_sponsor", owner_team="platform")  # fmt: skip
PERSON = SimpleNamespace(id="per_bench", status="active", email="p@example.com", groups=("staff",))


def synthetic(n: int, directory: Path) -> Path:
    """n policies: per-tool permits with conditions, and four forbids (the baseline's shape)."""
    lines = []
    for i in range(n - 4):
        lines.append(
            f'@id("tool-{i}")\npermit (principal is Agent, action == Action::"mcp:call", resource == Tool::"srv/tool{i}")\n'
            f"when {{ context.task.usage.calls < 1000 && resource.sensitivity <= 2 }};"
        )
    lines += [
        '@id("f-advisory")\nforbid (principal is Agent, action, resource) when { principal.mode == "advisory" } '
        'unless { action in Action::"read" };',
        '@id("f-hc")\n@breakglass("never")\nforbid (principal, action in Action::"share", resource) '
        "when { resource.sensitivity >= 3 && context.request.external_recipients > 0 };",
        '@id("f-destructive")\n@obligation("approval")\nforbid (principal, action, resource is Tool) when { resource.destructive };',
        '@id("f-night")\nforbid (principal, action in Action::"delete", resource) when { context.hour < 0 };',
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bundle.cedar").write_text("\n\n".join(lines))
    return directory


def engine(directory: Path | None) -> PolicyEngine:
    e = PolicyEngine(directory, agent_lookup=lambda i: AGENT if i == AGENT.id else None,
                     person_lookup=lambda i: (PERSON, frozenset()) if i == PERSON.id else None)  # fmt: skip
    e.load()
    return e


def request(tool: int, *, default_pack: bool) -> DecisionRequest:
    if default_pack:
        return DecisionRequest(AGENT.id, PERSON.id, (), "tsk_bench", frozenset({"mail:read"}), "mail:read",
                               Resource("MailMessage", "msg-1", "m365.mail", "confidential"))  # fmt: skip
    return DecisionRequest(AGENT.id, PERSON.id, (), "tsk_bench", frozenset({"mcp:call"}), "mcp:call",
                           Resource("Tool", f"srv/tool{tool}", "mcp:srv", "internal", None,
                                    {"read_only": True, "destructive": False}))  # fmt: skip


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(label: str, e: PolicyEngine, req: DecisionRequest, n: int) -> dict[str, float]:
    # The raw baseline: the same request and entities, the whole bundle as one pre-parsed set.
    b = e.bundle
    assert b is not None
    whole = b.policy_set_of(list(b.policies))
    p = e._principal(req.agent_id)
    u = e._user(req.person_id)
    assert p is not None
    assert u is not None
    level = {"public": 0, "internal": 1, "confidential": 2, "highly_confidential": 3}[req.resource.sensitivity]
    creq = e._cedar_request(req, p, u, level, False, False)
    ents = e._entities(req, p, level)
    d = e.decide(req)
    assert d.effect.value == "allow", (label, d)
    answers = e._answers

    def asked() -> None:  # Cedar evaluates every time: the engine's reused answers are forgotten first
        answers.clear()
        e.decide(req)

    tether, raw, reused = [], [], []
    for _ in range(5):  # interleave blocks so machine load hits both alike
        tether += timed(asked, n // 5)
        raw += timed(lambda: cedarpy.is_authorized(creq, whole, ents), n // 5)
        reused += timed(lambda: e.decide(req), n // 10)  # the same question again: Cedar's answer reused
    # requests built beforehand, so only decide() is timed; ids never repeat (warm-up included)
    novel = iter([replace(req, resource=replace(req.resource, id=f"{req.resource.id}-{i}")) for i in range(n + 1000)])
    fresh: list[float] = []
    for _ in range(5):
        fresh += timed(lambda: e.decide(next(novel)), n // 10)
    return {
        "policies": len(b.policies),
        "slice": len(b.slice_ids(req.action, req.resource.type, None, req.resource.id)),
        "new_p50": statistics.median(fresh), "new_p99": pct(fresh, 0.99),
        "reused_p50": statistics.median(reused), "reused_p99": pct(reused, 0.99),
        "p50": statistics.median(tether), "p99": pct(tether, 0.99), "per_s": 1e6 / statistics.mean(tether),
        "raw_p50": statistics.median(raw), "raw_p99": pct(raw, 0.99),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (< 60 s)")
    args = ap.parse_args()
    n = 2000 if args.quick else 20000
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-policy-"))
    e = engine(None)
    share = DecisionRequest(AGENT.id, PERSON.id, (), "tsk_bench", frozenset({"files:share"}), "files:share",
                            Resource("DriveItem", "doc-1", "m365.files", "confidential"), {"external_recipients": 1})  # fmt: skip
    assert e.decide(share).effect.value == "approval_required"
    approval = []
    for _ in range(5):
        approval += timed(lambda: (e._answers.clear(), e.decide(share)), n // 5)
    rows = {
        "default": measure("default", engine(None), request(0, default_pack=True), n),
        "200": measure("200", engine(synthetic(200, tmp / "b200")), request(137, default_pack=False), n),
        "1000": measure("1000", engine(synthetic(1000, tmp / "b1000")), request(737, default_pack=False), n),
    }
    print(
        f"{'bundle':>8} {'policies':>8} {'slice':>5} {'tether p50':>11} {'p99':>8} {'dec/s':>8} {'raw p50':>9} {'raw p99':>8} {'raw/tether':>10}"
    )
    for name, r in rows.items():
        print(f"{name:>8} {r['policies']:>8} {r['slice']:>5} {r['p50']:>9.1f}us {r['p99']:>6.1f}us {r['per_s']:>8.0f} "
              f"{r['raw_p50']:>7.1f}us {r['raw_p99']:>6.1f}us {r['raw_p50'] / r['p50']:>9.2f}x")  # fmt: skip
    print("tether = PolicyEngine.decide (code checks, cached entities, sliced set, obligations);")
    print("raw = cedarpy.is_authorized on the whole bundle as one pre-parsed PolicySet, same request and entities.")
    for name, r in rows.items():
        print(f"{name:>8}: a resource not seen before on every call: p50 {r['new_p50']:.1f}us p99 {r['new_p99']:.1f}us")
    for name, r in rows.items():
        print(f"{name:>8}: an equal question again (Cedar's answer reused): p50 {r['reused_p50']:.1f}us "
              f"p99 {r['reused_p99']:.1f}us")  # fmt: skip
    print(f" default: approval_required (a forbid holds): p50 {statistics.median(approval):.1f}us "
          f"p99 {pct(approval, 0.99):.1f}us")  # fmt: skip
    print(json.dumps({
        "p50_us_default": round(rows["default"]["p50"], 1), "p99_us_default": round(rows["default"]["p99"], 1),
        "p50_us_200": round(rows["200"]["p50"], 1), "p99_us_200": round(rows["200"]["p99"], 1),
        "p50_us_1000": round(rows["1000"]["p50"], 1), "p99_us_1000": round(rows["1000"]["p99"], 1),
        "raw_unsliced_p50_us_200": round(rows["200"]["raw_p50"], 1),
        "raw_unsliced_p50_us_1000": round(rows["1000"]["raw_p50"], 1),
        "decisions_per_s_default": round(rows["default"]["per_s"]),
        "p50_us_default_new_resource": round(rows["default"]["new_p50"], 1),
        "p99_us_default_new_resource": round(rows["default"]["new_p99"], 1),
        "p50_us_1000_new_resource": round(rows["1000"]["new_p50"], 1),
        "p50_us_default_approval": round(statistics.median(approval), 1),
        "p50_us_default_reused": round(rows["default"]["reused_p50"], 1),
        "p50_us_1000_reused": round(rows["1000"]["reused_p50"], 1),
        "p99_us_default_approval": round(pct(approval, 0.99), 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
