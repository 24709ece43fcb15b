"""The policy decision point: Cedar on a sliced, pre-parsed policy set, plus Tether's rules.

    decide(req) ─ code checks (action known, scope ⊆ task grant, agent and person active)
               ─ entities from the identity cache + the request
               ─ Cedar on the slice for (action, resource type)
               ─ obligations: approval / break-glass lifting, evaluation errors as forbids
               ─ Decision (id, effect, deciding @ids and @reasons, bundle hash)

Cedar evaluates every policy it is given, so each request gets only the slice whose scope
can match its action and resource type (a policy with an open scope is in every slice).
Nothing here raises on a bad request: it is denied with a reason. The bundle is swapped
atomically; a bad bundle is refused and the running one stays.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cedarpy import _internal

from tether import actions as catalogue
from tether.log import get_logger
from tether.policy.bundle import DEFAULT_PACK, Bundle, BundleError, load_bundle
from tether.policy.model import SENSITIVITY, Decision, DecisionRequest, Effect
from tether.policy.schema import RESOURCE_TYPES
from tether.types import new_id

log = get_logger("tether.policy")

RESERVED_FACTS = frozenset({"approved", "breakglass", "user", "actors"})
MAX_FACTS_BYTES = 64 * 1024
#: how long a cached agent or person is trusted before it is read again (changes that matter
#: at once — suspension, deprovisioning — also revoke every token, so the gateway refuses first)
ENTITY_TTL = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """What policy sees of an agent and the person it acts for (cached)."""

    entities_json: str  # the Agent and its sponsor Person as Cedar entity JSON (comma-joined)
    agent_active: bool
    mode: str


@dataclass(frozen=True, slots=True)
class User:
    context: dict[str, Any]
    active: bool


class PolicyEngine:
    def __init__(
        self,
        directory: Path | None,
        *,
        agent_lookup: Callable[[str], Any] | None = None,
        person_lookup: Callable[[str], tuple[Any, frozenset[str]] | None] | None = None,
        on_loaded: Callable[[Bundle], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory) if directory else DEFAULT_PACK
        self._agent_lookup = agent_lookup
        self._person_lookup = person_lookup
        self._on_loaded = on_loaded
        self._clock = clock
        self._bundle: Bundle | None = None
        self._agents: dict[str, tuple[float, Principal | None]] = {}
        self._users: dict[str, tuple[float, User | None]] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.loaded_at: float | None = None
        self._mtimes: dict[str, float] = {}
        self._action_json: dict[str, str] = {}

    # ------------------------------------------------------------- bundles

    @property
    def bundle(self) -> Bundle | None:
        return self._bundle

    @property
    def bundle_hash(self) -> str:
        return self._bundle.hash if self._bundle else "none"

    def load(self, directory: Path | None = None) -> Bundle:
        """Parse and validate, then swap atomically. On error the running bundle stays."""
        target = Path(directory) if directory else self.directory
        try:
            bundle = load_bundle(target)
        except BundleError as exc:
            self.last_error = exc.detail
            log.error("policy bundle refused", directory=str(target), problems=len(exc.problems))
            raise
        with self._lock:
            self._bundle = bundle
            self.directory = target
            self.last_error = None
            self.loaded_at = self._clock()
            self._mtimes = self._scan()
        if self._on_loaded is not None:
            self._on_loaded(bundle)
        return bundle

    def changed_on_disk(self) -> bool:
        return self._scan() != self._mtimes

    def _scan(self) -> dict[str, float]:
        try:
            return {str(p): p.stat().st_mtime for p in self.directory.rglob("*.cedar")}
        except OSError:
            return {}

    def invalidate(self, entity_id: str | None = None) -> None:
        """Forget cached agents/persons (one, or all) so the next decision reads them again."""
        with self._lock:
            if entity_id is None:
                self._agents.clear()
                self._users.clear()
            else:
                self._agents.pop(entity_id, None)
                self._users.pop(entity_id, None)

    # ------------------------------------------------------------- decide

    def decide(
        self, req: DecisionRequest, *, lifted_forbids: frozenset[str] = frozenset(), breakglass: bool = False
    ) -> Decision:
        bundle = self._bundle
        if bundle is None:
            return self._deny("tether:no-policy", "No policy bundle is loaded", "none")
        try:
            return self._decide(bundle, req, lifted_forbids, breakglass)
        except Exception as exc:  # noqa: BLE001 — a PDP must never crash open: any failure is a deny
            log.error("decision failed", error=type(exc).__name__, detail=str(exc)[:200])
            return self._deny("tether:error", f"The request could not be evaluated: {type(exc).__name__}", bundle.hash)

    def _decide(self, bundle: Bundle, req: DecisionRequest, lifted: frozenset[str], breakglass: bool) -> Decision:
        # Code checks first: the invariant never depends on a policy file.
        if not catalogue.is_known(req.action):
            return self._deny("tether:unknown-action", f"Unknown action {req.action!r}", bundle.hash)
        if req.action not in req.scopes:
            return self._deny("tether:scope", f"{req.action} is outside the task's granted scope", bundle.hash)
        if req.resource.type not in RESOURCE_TYPES:
            return self._deny("tether:resource-type", f"Unknown resource type {req.resource.type!r}", bundle.hash)
        level = SENSITIVITY.get(req.resource.sensitivity)
        if level is None:
            return self._deny("tether:sensitivity", f"Unknown sensitivity {req.resource.sensitivity!r}", bundle.hash)
        reserved = RESERVED_FACTS & set(req.facts)
        if reserved:
            return self._deny("tether:reserved", f"Reserved request keys: {', '.join(sorted(reserved))}", bundle.hash)
        principal = self._principal(req.agent_id)
        if principal is None or not principal.agent_active:
            return self._deny("tether:agent-inactive", "The agent is unknown or not active", bundle.hash)
        user = self._user(req.person_id)
        if user is None or not user.active:
            return self._deny("tether:person-inactive", "The person is unknown or not active", bundle.hash)

        request = self._cedar_request(req, principal, user, level, bool(lifted), breakglass)
        if request is None:
            return self._deny("tether:request-too-large", "The request facts are too large to evaluate", bundle.hash)
        entities = self._entities(req, principal, level)
        ps = bundle.policy_set(req.action, req.resource.type, "", req.resource.id)
        if ps is None:
            return self._deny("tether:default-deny", "No policy applies to this request", bundle.hash, default=True)
        decision, reasons, errors = _authorize(request, ps, entities)
        errored = {_error_policy(e) for e in errors}
        errored.discard(None)
        if decision == "Allow" and not errored:
            permits, forbids = reasons, []
        else:
            forbids = [r for r in reasons if bundle.policies[r].effect == "forbid"]
            permit_ps = bundle.policy_set(req.action, req.resource.type, "permit", req.resource.id)
            permits = []
            if permit_ps is not None:
                permits = _authorize(request, permit_ps, entities)[1]
        return self._resolve(bundle, permits, forbids, {e for e in errored if e}, lifted, breakglass)

    def _resolve(
        self, bundle: Bundle, permits: list[str], forbids: list[str], errored: set[str],
        lifted: frozenset[str], breakglass: bool,
    ) -> Decision:  # fmt: skip
        pol = bundle.policies
        satisfied = sorted(set(forbids) | {e for e in errored if e in pol})
        lifts: set[str] = set()
        for fid in satisfied:
            if fid in errored:
                continue  # an evaluation error is a forbid no approval or break-glass lifts
            if fid in lifted or (breakglass and not pol[fid].breakglass_never):
                lifts.add(fid)
        remaining = [f for f in satisfied if f not in lifts]
        if not permits:
            ids = tuple(remaining) or ("tether:default-deny",)
            why = tuple(pol[f].reason or f for f in remaining) or ("No policy permits this request",)
            return Decision(new_id("dec"), Effect.DENY, ids, why, tuple(remaining), None, bundle.hash)
        if not remaining:
            return Decision(
                new_id("dec"), Effect.ALLOW, tuple(sorted(permits)), tuple(pol[p].reason or p for p in sorted(permits)),
                (), None, bundle.hash, tuple(sorted(lifts)),
            )  # fmt: skip
        approvable = all(pol[f].obligation == "approval" and f not in errored for f in remaining)
        if approvable:
            return Decision(
                new_id("dec"), Effect.APPROVAL_REQUIRED, tuple(remaining), tuple(pol[f].reason or f for f in remaining),
                tuple(remaining), _strictest([pol[f].approver for f in remaining]), bundle.hash, tuple(sorted(lifts)),
            )  # fmt: skip
        blocking = [f for f in remaining if pol[f].obligation != "approval" or f in errored]
        why = tuple((pol[f].reason or f) if f not in errored else f"{f}: policy evaluation failed" for f in blocking)
        return Decision(new_id("dec"), Effect.DENY, tuple(blocking), why, tuple(remaining), None, bundle.hash)

    @staticmethod
    def _deny(pid: str, reason: str, bundle: str, *, default: bool = False) -> Decision:
        return Decision(new_id("dec"), Effect.DENY, (pid,), (reason,), (), None, bundle)

    # ------------------------------------------------------------ entities

    def _principal(self, agent_id: str) -> Principal | None:
        now = self._clock()
        hit = self._agents.get(agent_id)
        if hit is not None and now - hit[0] < ENTITY_TTL:
            return hit[1]
        value = self._load_principal(agent_id)
        self._agents[agent_id] = (now, value)
        return value

    def _load_principal(self, agent_id: str) -> Principal | None:
        if self._agent_lookup is None:
            return None
        agent = self._agent_lookup(agent_id)
        if agent is None:
            return None
        status = getattr(agent.status, "value", agent.status)
        mode = getattr(agent.mode, "value", agent.mode)
        review_due = agent.review_due
        overdue = bool(review_due and review_due < date.today())
        entity = {
            "uid": {"type": "Agent", "id": agent.id},
            "attrs": {
                "sponsor": {"__entity": {"type": "Person", "id": agent.sponsor_id}},
                "owner_team": agent.owner_team,
                "mode": mode,
                "status": status,
                "review_overdue": overdue,
            },
            "parents": [],
        }
        sponsor = {
            "uid": {"type": "Person", "id": agent.sponsor_id},
            "attrs": {"email": "", "groups": [], "status": "active"},
            "parents": [],
        }
        return Principal(json.dumps(entity) + "," + json.dumps(sponsor), status == "active", mode)

    def _user(self, person_id: str) -> User | None:
        now = self._clock()
        hit = self._users.get(person_id)
        if hit is not None and now - hit[0] < ENTITY_TTL:
            return hit[1]
        value = self._load_user(person_id)
        self._users[person_id] = (now, value)
        return value

    def _load_user(self, person_id: str) -> User | None:
        if self._person_lookup is None:
            return None
        found = self._person_lookup(person_id)
        if found is None:
            return None
        person, ents = found
        status = getattr(person.status, "value", person.status)
        ctx = {"id": person.id, "email": person.email, "groups": list(person.groups), "entitlements": sorted(ents)}
        return User(ctx, status == "active")

    def _entities(self, req: DecisionRequest, principal: Principal, level: int) -> str:
        r = req.resource
        attrs: dict[str, Any] = {
            "system": r.system,
            "sensitivity": level,
            "label": r.sensitivity,
            "owner": r.owner or "",
        }
        if r.type == "Tool":
            a = r.attrs
            # MCP defaults when a tool says nothing: not read-only, destructive, open world.
            attrs.update(
                server=str(a.get("server", "")), name=str(a.get("name", r.id)),
                read_only=bool(a.get("read_only", False)), destructive=bool(a.get("destructive", True)),
                open_world=bool(a.get("open_world", True)),
            )  # fmt: skip
        resource = {"uid": {"type": r.type, "id": r.id}, "attrs": attrs, "parents": []}
        return "[" + principal.entities_json + "," + json.dumps(resource) + "," + self._actions_of(req.action) + "]"

    def _actions_of(self, action: str) -> str:
        """Only the request's action and its action-type group: all `action in …` needs."""
        cached = self._action_json.get(action)
        if cached is None:
            kind = catalogue.action_type(action).value
            cached = json.dumps(
                [
                    {"uid": {"type": "Action", "id": action}, "attrs": {}, "parents": [{"type": "Action", "id": kind}]},
                    {"uid": {"type": "Action", "id": kind}, "attrs": {}, "parents": []},
                ]
            )[1:-1]
            self._action_json[action] = cached
        return cached

    @staticmethod
    def _cedar_request(
        req: DecisionRequest, principal: Principal, user: User, level: int, approved: bool, breakglass: bool
    ) -> dict[str, Any] | None:
        f = req.facts
        recipients = f.get("recipients", 0)
        if isinstance(recipients, list | tuple):
            recipients = len(recipients)
        try:
            request_facts = {
                "recipients": int(recipients or 0),
                "external_recipients": int(f.get("external_recipients", 0) or 0),
                "size": int(f.get("size", 0) or 0),
                "items": int(f.get("items", 0) or 0),
            }
        except (TypeError, ValueError):
            return None
        u = req.usage
        now = datetime.now(UTC)
        context = {
            "action": req.action,
            "user": user.context,
            "actors": list(req.actors),
            "task": {
                "id": req.task_id,
                "scopes": sorted(req.scopes),
                "usage": {k: int(u.get(k, 0) or 0) for k in ("items", "bytes", "calls", "external_recipients")},
            },
            "request": request_facts,
            "approved": approved,
            "breakglass": breakglass,
            "app_only": bool(f.get("app_only", False)),
            "now": int(now.timestamp()),
            "hour": now.hour,
        }
        text = json.dumps(context)  # serialised once: sized here, parsed once by Cedar
        if len(text) > MAX_FACTS_BYTES:
            return None
        return {
            "principal": {"type": "Agent", "id": req.agent_id},
            "action": {"type": "Action", "id": req.action},
            "resource": {"type": req.resource.type, "id": req.resource.id},
            "context": text,
        }


def _authorize(request: dict[str, Any], policies: Any, entities: str) -> tuple[str, list[str], list[Any]]:
    """One Cedar evaluation: (decision, satisfied policy ids, errors).

    Calls the extension directly with the context already serialised: cedarpy's wrapper
    would serialise the context again and build result objects we do not need.
    """
    raw = _internal.is_authorized_batch([request], policies, entities, None, False)[0]
    doc = json.loads(raw)
    diag = doc.get("diagnostics", {})
    return doc["decision"], list(diag.get("reason", [])), list(diag.get("errors", []))


_STRICTNESS = {"person": 0, "sponsor": 1, "group": 2, "not-self": 3}


def _strictest(approvers: list[str | None]) -> str:
    rules = [a or "sponsor" for a in approvers]
    return max(rules, key=lambda a: _STRICTNESS["group" if a.startswith("group:") else a])


def _error_policy(error: Any) -> str | None:
    """The policy id an evaluation error names (cedarpy reports `… policy <id> …`)."""
    text = str(error)
    import re

    m = re.search(r"policy `?([^\s`:]+)`?", text)
    return m.group(1) if m else "tether:evaluation-error"


def reserved_facts(facts: Mapping[str, Any]) -> set[str]:
    return set(RESERVED_FACTS & set(facts))


__all__ = ["RESERVED_FACTS", "PolicyEngine", "reserved_facts"]
