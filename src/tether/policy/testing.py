"""Policy tests: YAML cases (request → expected effect and deciding policy ids).

    cases:
      - name: advisory agent cannot send mail
        agent: {mode: advisory}               # mode, status, review_overdue
        action: mail:send
        resource: {type: MailMessage, id: m1, system: m365.mail, sensitivity: internal}
        facts: {external_recipients: 1}
        scopes: [mail:send]                   # default: just the action
        usage: {items: 0}
        lifted: [external.confidential-needs-approval]   # an approval was given
        breakglass: false
        expect: {effect: deny, policy_ids: [mode.advisory-read-only]}

Each case runs against an in-memory agent and person, so a bundle's tests need no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from tether.policy.bundle import Bundle
from tether.policy.engine import PolicyEngine
from tether.policy.model import Decision, DecisionRequest, Resource

AGENT_ID, PERSON_ID, SPONSOR_ID = "agt_test", "per_test", "per_sponsor"


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    expected: dict[str, Any]
    got: Decision | None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"{self.file}: {self.name}: {self.error}"
        got = self.got
        assert got is not None
        return (
            f"{self.file}: {self.name}: expected {self.expected.get('effect')} {self.expected.get('policy_ids', '')}, "
            f"got {got.effect.value} {list(got.policy_ids)} ({'; '.join(got.reasons)})"
        )


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]


def engine_for(bundle: Bundle, agent: dict[str, Any], person: dict[str, Any]) -> PolicyEngine:
    overdue = bool(agent.get("review_overdue", False))
    a = SimpleNamespace(
        id=AGENT_ID, status=agent.get("status", "active"), mode=agent.get("mode", "executing"),
        review_due=date.today() - timedelta(days=1) if overdue else date.today() + timedelta(days=30),
        sponsor_id=SPONSOR_ID, owner_team=agent.get("owner_team", "platform"),
    )  # fmt: skip
    p = SimpleNamespace(
        id=person.get("id", PERSON_ID),
        status=person.get("status", "active"),
        email=person.get("email", "p@example.com"),
        groups=tuple(person.get("groups", ())),
    )  # fmt: skip
    ents = frozenset(person.get("entitlements", ()))
    engine = PolicyEngine(None, agent_lookup=lambda i: a if i == AGENT_ID else None,
                          person_lookup=lambda i: (p, ents) if i == p.id else None)  # fmt: skip
    engine._bundle = bundle  # the bundle under test, already validated
    return engine


def request_of(case: dict[str, Any]) -> DecisionRequest:
    r = case["resource"]
    action = case["action"]
    person_id = (case.get("person") or {}).get("id", PERSON_ID)
    return DecisionRequest(
        agent_id=AGENT_ID, person_id=person_id, actors=tuple(case.get("actors", ())), task_id="tsk_test",
        scopes=frozenset(case.get("scopes", [action])), action=action,
        resource=Resource(type=r["type"], id=str(r.get("id", "r1")), system=r.get("system", "test"),
                          sensitivity=r.get("sensitivity", "internal"), owner=r.get("owner"), attrs=r.get("attrs", {})),
        facts=case.get("facts", {}), usage=case.get("usage", {}),
    )  # fmt: skip


def decide_case(bundle: Bundle, case: dict[str, Any]) -> Decision:
    engine = engine_for(bundle, case.get("agent") or {}, case.get("person") or {})
    return engine.decide(
        request_of(case), lifted_forbids=frozenset(case.get("lifted", ())), breakglass=bool(case.get("breakglass"))
    )


def run_tests(bundle: Bundle, directory: Path) -> Report:
    report = Report()
    for path in sorted((Path(directory) / "tests").glob("*.y*ml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            report.results.append(CaseResult(path.name, "(file)", False, {}, None, f"not YAML: {exc}"))
            continue
        for i, case in enumerate(doc.get("cases", [])):
            name = case.get("name", f"case {i + 1}")
            expect = case.get("expect") or {}
            try:
                got = decide_case(bundle, case)
            except (KeyError, TypeError, ValueError) as exc:
                report.results.append(CaseResult(path.name, name, False, expect, None, f"malformed case: {exc!r}"))
                continue
            ok = got.effect.value == expect.get("effect")
            if ok and "policy_ids" in expect:
                ok = sorted(got.policy_ids) == sorted(expect["policy_ids"])
            report.results.append(CaseResult(path.name, name, ok, expect, got))
    return report


__all__ = ["CaseResult", "Report", "decide_case", "engine_for", "request_of", "run_tests"]
