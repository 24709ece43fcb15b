"""The policy decision point: Cedar on a sliced, pre-parsed policy set, plus Tether's rules.

    decide(req) ─ code checks (action known, scope ⊆ task grant, agent and person active)
               ─ entities: a pre-parsed Cedar graph of agent, sponsor, action and resource,
                 built from the identity cache + the request and kept by content
               ─ context: only the attributes the slice reads (`tether.policy.context`)
               ─ Cedar, once, on the slice for (action, resource type, resource)
               ─ obligations: approval / break-glass lifting, evaluation errors as forbids
               ─ Decision (id, effect, deciding @ids and @reasons, bundle hash)

Cedar evaluates every policy it is given, so each request gets only the slice whose scope
can match its action and resource type (a policy with an open scope is in every slice).
Nothing here raises on a bad request: it is denied with a reason. The bundle is swapped
atomically; a bad bundle is refused and the running one stays.

What a decision costs is mostly Cedar parsing its inputs, so nothing is parsed twice: the
policies once per slice, the entities once per distinct (agent, sponsor, action, resource),
and the context is cut to what the slice reads. The slice is evaluated with every policy as
a permit so that one pass reports every satisfied policy (see `Slice`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from cedarpy import _internal

from tether import actions as catalogue
from tether.log import get_logger
from tether.policy.bundle import DEFAULT_PACK, Bundle, BundleError, load_bundle
from tether.policy.context import FULL, LAYOUT, leaves
from tether.policy.model import SENSITIVITY, Decision, DecisionRequest, Effect
from tether.policy.schema import RESOURCE_TYPES
from tether.types import new_id

log = get_logger("tether.policy")

RESERVED_FACTS = frozenset({"approved", "breakglass", "user", "actors"})
MAX_FACTS_BYTES = 64 * 1024
#: how long a cached agent or person is trusted before it is read again (changes that matter
#: at once — suspension, deprovisioning — also revoke every token, so the gateway refuses first)
ENTITY_TTL = 5.0
#: entity graphs (agent, sponsor, action, resource) kept pre-parsed; the oldest goes when full
GRAPH_CACHE = 4096
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1  # Cedar's Long
_ZEROS = (0, 0, 0, 0)
_USAGE = ("items", "bytes", "calls", "external_recipients")
#: length of the full context template with every piece empty
_FULL_FIXED = len(FULL.format_map(dict.fromkeys(leaves(LAYOUT), "")))


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
    #: `context.user`'s fields, serialised once (pieces of the context template)
    pieces: dict[str, str]
    #: a field holds an escaped UTF-16 surrogate (see `PolicyEngine._pieces`)
    unusual: bool = False


class PolicyEngine:
    def __init__(
        self,
        directory: Path | None,
        *,
        agent_lookup: Callable[[str], Any] | None = None,
        person_lookup: Callable[[str], tuple[Any, frozenset[str]] | None] | None = None,
        on_loaded: Callable[[Bundle], None] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
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
        self._action_names: dict[str, str] = {}
        # Pre-parsed Cedar entity graphs, keyed by their content: the principal's entity JSON
        # (a changed agent or sponsor is a new key, so nothing stale is ever served), the
        # action and the resource's attributes. Bases hold the graph without the resource.
        self._graphs: dict[tuple[Any, ...], Any] = {}
        self._bases: dict[tuple[str, str], Any] = {}
        self._scopes_json: dict[frozenset[str], str] = {}
        #: Cedar's answers (satisfied policy ids, errors) by their whole question (see `_decide`)
        self._answers: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[Any, ...]]] = {}
        self._evaluated: Any = None
        self._reused: Any = None
        if metrics is not None:
            self._evaluated = metrics.child(metrics.policy_evaluations, "evaluated")
            self._reused = metrics.child(metrics.policy_evaluations, "reused")
        self._second = -1
        self._time_pieces = ("0", "0")

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
            self._answers.clear()  # the old slices' answers would never be asked for again
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
        reserved = RESERVED_FACTS.intersection(req.facts)
        if reserved:
            return self._deny("tether:reserved", f"Reserved request keys: {', '.join(sorted(reserved))}", bundle.hash)
        principal = self._principal(req.agent_id)
        if principal is None or not principal.agent_active:
            return self._deny("tether:agent-inactive", "The agent is unknown or not active", bundle.hash)
        user = self._user(req.person_id)
        if user is None or not user.active:
            return self._deny("tether:person-inactive", "The person is unknown or not active", bundle.hash)

        sl = bundle.slice_for(req.action, req.resource.type, req.resource.id)
        context = self._context(req, user, bool(lifted), breakglass, sl.context if sl is not None else FULL)
        if context is None:
            return self._deny("tether:request-too-large", "The request facts are too large to evaluate", bundle.hash)
        if sl is None:
            return self._deny("tether:default-deny", "No policy applies to this request", bundle.hash, default=True)
        request = {
            "principal": {"type": "Agent", "id": req.agent_id},
            "action": {"type": "Action", "id": req.action},
            "resource": {"type": req.resource.type, "id": req.resource.id},
            "context": context[0],
        }
        policies = sl.plain if context[1] else sl.policies
        graph_key = self._graph_key(req, principal, level, sl.resource_attrs)
        # Cedar's answer depends on the policies, the entities and the request alone, so an equal
        # question gets the answer it got before: an assistant asks the same one again and again
        # (the same tool, the same mailbox). The key holds the policy set itself (a reloaded bundle
        # is another key), the entities' content (a changed agent, sponsor or resource is another
        # key; an answer keeps no graph alive) and the context text, which carries everything the
        # slice reads: usage, time, approval.
        key = (policies, graph_key, req.agent_id, req.action, req.resource.type, req.resource.id, context[0])
        found = self._answers.get(key)
        if found is None:
            found = _evaluate(request, policies, self._graph(graph_key, req, principal, level, sl.resource_attrs))
            if not found[1]:  # an answer with evaluation errors is never reused
                _remember(self._answers, key, found)
            self._count(evaluated=True)
        else:
            self._count(evaluated=False)
        satisfied, errors = found
        errored = {p for p in map(_error_policy, errors) if p} if errors else set()
        forbids = sl.forbids
        if forbids.isdisjoint(satisfied):  # the usual answer: permits only
            return self._resolve(bundle, list(satisfied), [], errored, lifted, breakglass)
        permits = [r for r in satisfied if r not in forbids]
        return self._resolve(bundle, permits, [r for r in satisfied if r in forbids], errored, lifted, breakglass)

    def _resolve(
        self, bundle: Bundle, permits: list[str], forbids: list[str], errored: set[str],
        lifted: frozenset[str], breakglass: bool,
    ) -> Decision:  # fmt: skip
        pol = bundle.policies
        if permits and not forbids and not errored:  # the common allow: nothing to lift or weigh
            ids = tuple(sorted(permits))
            return Decision(new_id("dec"), Effect.ALLOW, ids, tuple(pol[p].reason or p for p in ids), (), None,
                            bundle.hash)  # fmt: skip
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

    def _count(self, *, evaluated: bool) -> None:
        counter = self._evaluated if evaluated else self._reused
        if counter is not None:
            counter.inc()

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
        pieces = {f"user_{k}": json.dumps(v) for k, v in ctx.items()}
        return User(ctx, status == "active", pieces, any("\\ud" in v for v in pieces.values()))

    @staticmethod
    def _graph_key(
        req: DecisionRequest, principal: Principal, level: int, reads: frozenset[str] | None
    ) -> tuple[Any, ...]:
        """Everything the request's entities are built from: equal keys, equal entities."""
        r = req.resource
        return (principal.entities_json, req.action, reads, r.type, r.id, r.system, level, r.sensitivity, r.owner,
                _tool_attrs(r))  # fmt: skip

    def _graph(
        self, key: tuple[Any, ...], req: DecisionRequest, principal: Principal, level: int,
        reads: frozenset[str] | None = None,
    ) -> Any:  # fmt: skip
        """The request's entities (`key`: their `_graph_key`) as a pre-parsed Cedar handle, built once per
        distinct content.

        The resource carries only the attributes in `reads` (those the slice can read; None:
        all of them): Cedar parses each one it is given, and no policy can see the others.
        """
        r = req.resource
        graph = self._graphs.get(key)
        if graph is None:
            base_key = (principal.entities_json, req.action)
            base = self._bases.get(base_key)
            if base is None:
                base = _internal.Entities.from_json_str(
                    "[" + principal.entities_json + "," + self._actions_of(req.action) + "]"
                )
                _remember(self._bases, base_key, base)
            attrs = _resource_attrs(r, level)
            if reads is not None:
                attrs = {k: v for k, v in attrs.items() if k in reads}
            resource = {"uid": {"type": r.type, "id": r.id}, "attrs": attrs, "parents": []}
            graph = base.with_added_json_str("[" + json.dumps(resource) + "]")
            _remember(self._graphs, key, graph)
        return graph

    def _entities(self, req: DecisionRequest, principal: Principal, level: int) -> str:
        """The same entities as JSON text, the resource with all its attributes (what an unsliced evaluation gets)."""
        r = req.resource
        attrs = _resource_attrs(r, level)
        resource = json.dumps({"uid": {"type": r.type, "id": r.id}, "attrs": attrs, "parents": []})
        return "[" + principal.entities_json + "," + resource + "," + self._actions_of(req.action) + "]"

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

    def _context(
        self, req: DecisionRequest, user: User, approved: bool, breakglass: bool, slim: str
    ) -> tuple[str, bool] | None:
        """(the context for the slice as JSON text, whether it is the full one); None if unusable or too large.

        The size limit applies to the full context, whatever the slice reads. Its length is
        the template's fixed part plus its pieces (each piece appears once), so it is not rendered.
        """
        found = self._pieces(req, user, approved, breakglass)
        if found is None:
            return None
        pieces, unusual = found
        if _FULL_FIXED + sum(map(len, pieces.values())) > MAX_FACTS_BYTES:
            return None
        # Cedar may refuse an unusual context: then it sees all of it, and fails as it always did.
        return (FULL.format_map(pieces), True) if unusual else (slim.format_map(pieces), False)

    def _full_context(self, req: DecisionRequest, user: User, approved: bool, breakglass: bool) -> str | None:
        """The whole context record as JSON text: `json.dumps` of it, byte for byte."""
        found = self._pieces(req, user, approved, breakglass)
        if found is None:
            return None
        text = FULL.format_map(found[0])
        return None if len(text) > MAX_FACTS_BYTES else text

    def _pieces(
        self, req: DecisionRequest, user: User, approved: bool, breakglass: bool
    ) -> tuple[dict[str, str], bool] | None:
        """Each context field as JSON text, and whether Cedar might refuse one (`tether.policy.context`)."""
        f = req.facts
        facts: tuple[int, ...] = _ZEROS
        if f:
            recipients = f.get("recipients", 0)
            if isinstance(recipients, list | tuple):
                recipients = len(recipients)
            try:
                facts = (
                    int(recipients or 0),
                    int(f.get("external_recipients", 0) or 0),
                    int(f.get("size", 0) or 0),
                    int(f.get("items", 0) or 0),
                )
            except (TypeError, ValueError):
                return None
        u = req.usage
        usage = tuple(int(u.get(k, 0) or 0) for k in _USAGE) if u else _ZEROS
        second = int(time.time())
        if second != self._second:
            self._time_pieces = (str(second), str(second // 3600 % 24))
            self._second = second
        scopes = self._scopes_json.get(req.scopes)
        if scopes is None:
            scopes = json.dumps(sorted(req.scopes))
            if len(self._scopes_json) >= GRAPH_CACHE:
                self._scopes_json.clear()
            self._scopes_json[req.scopes] = scopes
        actors = json.dumps(list(req.actors)) if req.actors else "[]"
        task_id = json.dumps(req.task_id)
        pieces = {
            "action": self._action_name(req.action),
            **user.pieces,
            "actors": actors,
            "task_id": task_id,
            "task_scopes": scopes,
            "usage_items": str(usage[0]), "usage_bytes": str(usage[1]), "usage_calls": str(usage[2]),
            "usage_external_recipients": str(usage[3]),
            "request_recipients": str(facts[0]), "request_external_recipients": str(facts[1]),
            "request_size": str(facts[2]), "request_items": str(facts[3]),
            "approved": "true" if approved else "false",
            "breakglass": "true" if breakglass else "false",
            "app_only": "true" if f.get("app_only", False) else "false",
            "now": self._time_pieces[0],
            "hour": self._time_pieces[1],
        }  # fmt: skip
        # Numbers beyond Cedar's Long, or UTF-16 surrogates escaped in a string (Cedar's JSON
        # reader refuses lone ones), make Cedar refuse the context.
        unusual = (
            min(*facts, *usage) < _LONG_MIN
            or max(*facts, *usage) > _LONG_MAX
            or user.unusual
            or "\\ud" in actors
            or "\\ud" in task_id
            or "\\ud" in scopes
        )
        return pieces, unusual

    def _action_name(self, action: str) -> str:
        name = self._action_names.get(action)
        if name is None:
            name = self._action_names[action] = json.dumps(action)  # a catalogued name: bounded
        return name

    def _cedar_request(
        self, req: DecisionRequest, principal: Principal, user: User, level: int, approved: bool, breakglass: bool
    ) -> dict[str, Any] | None:
        """The request with the full context (what an unsliced evaluation is given)."""
        text = self._full_context(req, user, approved, breakglass)
        if text is None:
            return None
        return {
            "principal": {"type": "Agent", "id": req.agent_id},
            "action": {"type": "Action", "id": req.action},
            "resource": {"type": req.resource.type, "id": req.resource.id},
            "context": text,
        }


_TOOL_ATTRS = ("server", "name", "read_only", "destructive", "open_world")


def _tool_attrs(r: Any) -> tuple[Any, ...]:
    """A tool's MCP annotations, in `_TOOL_ATTRS` order; () for a resource that is not a tool.

    MCP's defaults when a tool says nothing: not read-only, destructive, open world.
    """
    if r.type != "Tool":
        return ()
    a = r.attrs
    return (
        str(a.get("server", "")), str(a.get("name", r.id)), bool(a.get("read_only", False)),
        bool(a.get("destructive", True)), bool(a.get("open_world", True)),
    )  # fmt: skip


def _resource_attrs(r: Any, level: int) -> dict[str, Any]:
    """The resource entity's attributes: what every resource has, then a tool's annotations."""
    attrs: dict[str, Any] = {"system": r.system, "sensitivity": level, "label": r.sensitivity, "owner": r.owner or ""}
    attrs.update(zip(_TOOL_ATTRS, _tool_attrs(r), strict=False))
    return attrs


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep `value`, dropping the oldest entry when the cache is full."""
    if len(cache) >= GRAPH_CACHE:
        with contextlib.suppress(KeyError, RuntimeError, StopIteration):  # another thread changed it meanwhile
            del cache[next(iter(cache))]
    cache[key] = value


#: parsed diagnostics by their JSON text (see `_evaluate`)
_DIAGNOSTICS: dict[str, tuple[tuple[str, ...], tuple[Any, ...]]] = {}


def _evaluate(request: dict[str, Any], policies: Any, entities: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """One Cedar evaluation of the slice: (every satisfied policy id, evaluation errors).

    Calls the extension directly with the context already serialised: cedarpy's wrapper
    would serialise the context again and build result objects we do not need. Cedar's
    answer is `{"decision", "correlation_id", "diagnostics", "metrics"}` and only the metrics
    (timings) differ between equal outcomes, so the text from `"diagnostics":` to the last
    `,"metrics":` is parsed once per distinct value. Answers with errors are not kept.
    """
    raw = _internal.is_authorized(request, policies, entities, None, False)
    start, end = raw.find('"diagnostics":'), raw.rfind(',"metrics":')
    key = raw[start:end] if 0 <= start < end else raw
    found = _DIAGNOSTICS.get(key)
    if found is None:
        diag = json.loads(raw).get("diagnostics", {})
        # a request Cedar cannot build has errors and no reasons
        found = (tuple(diag.get("reason", ())), tuple(diag.get("errors", ())))
        if not found[1] and key is not raw:
            if len(_DIAGNOSTICS) >= 1024:
                _DIAGNOSTICS.clear()
            _DIAGNOSTICS[key] = found
    return found


def _authorize(request: dict[str, Any], policies: Any, entities: Any) -> tuple[str, list[str], list[Any]]:
    """One Cedar evaluation with the policies' own effects: (decision, satisfied ids, errors)."""
    raw = _internal.is_authorized(request, policies, entities, None, False)
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
