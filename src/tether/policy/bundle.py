"""Policy bundles: a directory of `.cedar` files, parsed and validated before they load.

A bundle is immutable once built. Loading parses each file on its own (so an error names
its file and line), validates every policy against the schema, checks the annotations
Tether gives meaning to, and indexes policies by the action and resource type their scope
names. A bad bundle raises `BundleError` with every problem found; the caller keeps the
bundle it had.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from tether import actions as catalogue
from tether.errors import ValidationFailed
from tether.policy.context import context_reads, flatten, resource_reads, template
from tether.policy.schema import RESOURCE_TYPES, schema_json

APPROVER_RE = re.compile(r"^(sponsor|person|not-self|group:[A-Za-z0-9_.-]{1,100})$")
DEFAULT_PACK = Path(__file__).parent / "default_pack"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class BundleError(ValidationFailed):
    code, title = "policy_bundle_invalid", "Policy bundle refused"

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            "; ".join(str(p) for p in problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""),
            field="policies",
            problems=[{"file": p.file, "line": p.line, "message": p.message} for p in problems],
        )
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    effect: str  # "permit" | "forbid"
    file: str
    line: int
    est: dict[str, Any]
    reason: str
    obligation: str | None
    approver: str | None
    breakglass_never: bool
    #: action names the scope admits (None = any action)
    actions: frozenset[str] | None
    #: resource types the scope admits (None = any type)
    resource_types: frozenset[str] | None
    #: the one resource (type, id) the scope names with `==`, if any
    resource_uid: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Slice:
    """What one evaluation needs: the slice's policies, pre-parsed, and the context they read.

    Every policy goes to Cedar as a *permit* (the original effects are in `forbids`): Cedar
    then reports every satisfied policy in one evaluation, where with the real effects a
    denied request would need a second pass to learn which permits hold. Satisfaction and
    evaluation errors do not depend on a policy's effect, so nothing else changes.
    """

    ids: tuple[str, ...]
    policies: Any  # cedarpy PolicySet, every policy a permit, reading the context `context` renders
    forbids: frozenset[str]
    context: str  # str.format_map template of the context attributes the slice reads (flat if it can be)
    plain: Any  # the same policies as written, for the full context (see tether.policy.context)
    resource_attrs: frozenset[str] | None  # the resource attributes the slice reads (None: any)


@dataclass
class Bundle:
    """Parsed, validated policies plus the slices built from them on demand."""

    policies: dict[str, Policy]
    hash: str
    files: tuple[str, ...]
    source: str
    _index: dict[tuple[str, str], tuple[tuple[str, ...], dict[str, list[str]]]] = field(default_factory=dict)
    _evaluations: dict[tuple[str, ...], Slice] = field(default_factory=dict)

    def slice_ids(
        self, action: str, resource_type: str, effect: str | None = None, resource_id: str | None = None
    ) -> list[str]:
        """Policies that can apply to the request; sound: an open scope is in every slice."""
        return [
            p.id
            for p in self.policies.values()
            if (effect is None or p.effect == effect)
            and (p.actions is None or action in p.actions)
            and (p.resource_types is None or resource_type in p.resource_types)
            and (p.resource_uid is None or p.resource_uid == (resource_type, resource_id))
        ]

    def slice_for(self, action: str, resource_type: str, resource_id: str) -> Slice | None:
        """The evaluation slice for a request (None when no policy can apply), cached by content."""
        ids = self._slice_key(action, resource_type, resource_id)
        if not ids:
            return None
        found = self._evaluations.get(ids)
        if found is None:
            if len(self._evaluations) > 10_000:
                self._evaluations.clear()
            as_permits = [{**self.policies[i].est, "effect": "permit"} for i in ids]
            plain = _policy_set(ids, as_permits)
            flat = flatten(as_permits)
            found = self._evaluations[ids] = Slice(
                ids=ids,
                policies=plain if flat is None else _policy_set(ids, flat[0]),
                forbids=frozenset(i for i in ids if self.policies[i].effect == "forbid"),
                context=template(context_reads(as_permits)) if flat is None else flat[1],
                plain=plain,
                resource_attrs=resource_reads(as_permits),
            )
        return found

    def _slice_key(self, action: str, resource_type: str, resource_id: str) -> tuple[str, ...]:
        """The ids of the request's slice.

        Policies naming one resource with `==` are indexed by that resource, so a bundle of
        many per-tool or per-site policies still gives each request a slice of a few.
        """
        key = (action, resource_type)
        index = self._index.get(key)
        if index is None:
            generic = tuple(self.slice_ids(action, resource_type, None, None))
            specific: dict[str, list[str]] = {}
            for p in self.policies.values():
                if p.resource_uid is None or p.resource_uid[0] != resource_type:
                    continue
                if p.actions is not None and action not in p.actions:
                    continue
                specific.setdefault(p.resource_uid[1], []).append(p.id)
            index = (generic, specific)
            self._index[key] = index
        generic, specific = index
        extra = specific.get(resource_id)
        return generic + tuple(extra) if extra else generic

    def policy_set_of(self, ids: Iterable[str]) -> Any:
        ids = list(ids)
        return _policy_set(ids, [self.policies[i].est for i in ids])


def _policy_set(ids: Iterable[str], ests: Iterable[dict[str, Any]]) -> Any:
    doc = {"staticPolicies": dict(zip(ids, ests, strict=True)), "templates": {}, "templateLinks": []}
    return cedarpy.PolicySet.from_json_str(json.dumps(doc))


def _statements(text: str) -> list[int]:
    """Start line of each policy statement (split on `;` outside strings and comments)."""
    starts: list[int] = []
    line, i, n = 1, 0, len(text)
    in_stmt = False
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c == '"':
            if not in_stmt:
                starts.append(line)
                in_stmt = True
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif c == ";":
            in_stmt = False
        elif not c.isspace() and not in_stmt:
            starts.append(line)
            in_stmt = True
        i += 1
    return starts


def _scope_actions(scope: dict[str, Any]) -> frozenset[str] | None:
    op = scope.get("op")
    groups = {k.value for k in catalogue.ActionType}
    if op == "==":
        return frozenset({scope["entity"]["id"]})
    if op == "in":
        ents = scope.get("entities") or [scope.get("entity")]
        names: set[str] = set()
        for e in ents:
            eid = e["id"]
            if eid in groups:
                names.update(a for a, t in catalogue.all_actions().items() if t.value == eid)
                names.add(eid)
            else:
                names.add(eid)
        return frozenset(names)
    return None


def _scope_types(scope: dict[str, Any]) -> frozenset[str] | None:
    op = scope.get("op")
    if op in ("is",):
        return frozenset({scope["entity_type"]})
    if op == "==" and "entity" in scope:
        return frozenset({scope["entity"]["type"]})
    return None  # `in`, `All`, slots: keep in every slice


def _scope_uid(scope: dict[str, Any]) -> tuple[str, str] | None:
    if scope.get("op") == "==" and "entity" in scope:
        return (scope["entity"]["type"], scope["entity"]["id"])
    return None


def _annotation(ann: dict[str, str], key: str) -> str | None:
    v = ann.get(key)
    return None if v is None else str(v)


def load_bundle(directory: Path) -> Bundle:
    """Parse and validate every `*.cedar` file under `directory` (not `tests/`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError([Problem(str(directory), 0, "policy directory does not exist")])
    files = sorted(p for p in directory.rglob("*.cedar") if "tests" not in p.relative_to(directory).parts)
    if not files:
        raise BundleError([Problem(str(directory), 0, "no .cedar files")])
    schema = json.dumps(schema_json())
    problems: list[Problem] = []
    policies: dict[str, Policy] = {}
    digest = hashlib.sha256()
    for path in files:
        rel = str(path.relative_to(directory))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(rel, 0, f"cannot read: {exc}"))
            continue
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        if not text.strip() or not _statements(text):
            continue
        try:
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            problems.append(Problem(rel, _failing_statement(text), f"does not parse: {_first_line(str(exc))}"))
            continue
        lines = _statements(text)
        result = cedarpy.validate_policies(text, schema)
        seen: set[tuple[int, str]] = set()
        for err in result.errors:
            idx = _index(err.policy_id)
            # Cedar reports one error per action a scope admits; one line per policy and message is enough.
            msg = re.sub(r" for Action::\"[^\"]*\"", "", str(err.error)).replace(f"for policy `{err.policy_id}`, ", "")
            if (idx, msg) not in seen:
                seen.add((idx, msg))
                problems.append(Problem(rel, lines[idx] if idx < len(lines) else 0, f"schema: {msg}"))
        for key, body in est["staticPolicies"].items():
            idx = _index(key)
            line = lines[idx] if idx < len(lines) else 0
            ann = body.get("annotations", {})
            pid = ann.get("id")
            if not pid:
                problems.append(Problem(rel, line, 'every policy needs an @id("…")'))
                continue
            if pid in policies:
                problems.append(Problem(rel, line, f"duplicate @id {pid!r} (also in {policies[pid].file})"))
                continue
            if pid.startswith("tether:"):
                problems.append(Problem(rel, line, "@id values starting with 'tether:' are reserved"))
            effect = body["effect"]
            obligation = _annotation(ann, "obligation")
            approver = _annotation(ann, "approver")
            breakglass = _annotation(ann, "breakglass")
            if obligation not in (None, "approval"):
                problems.append(Problem(rel, line, f'@obligation must be "approval", not {obligation!r}'))
            if obligation and effect != "forbid":
                problems.append(Problem(rel, line, "@obligation belongs on a forbid"))
            if approver is not None and not APPROVER_RE.match(approver):
                problems.append(
                    Problem(rel, line, f"@approver {approver!r}: use sponsor, person, not-self or group:<name>")
                )
            if breakglass not in (None, "never"):
                problems.append(Problem(rel, line, f'@breakglass must be "never", not {breakglass!r}'))
            unknown = _unknown_actions(body.get("action", {}))
            if unknown:
                problems.append(Problem(rel, line, f"unknown action(s): {', '.join(sorted(unknown))}"))
            types = _scope_types(body.get("resource", {}))
            if types is not None and not types <= set(RESOURCE_TYPES):
                problems.append(Problem(rel, line, f"unknown resource type(s): {', '.join(sorted(types))}"))
            policies[pid] = Policy(
                id=pid, effect=effect, file=rel, line=line, est=body, reason=_annotation(ann, "reason") or "",
                obligation=obligation, approver=approver, breakglass_never=breakglass == "never",
                actions=_scope_actions(body.get("action", {})), resource_types=types,
                resource_uid=_scope_uid(body.get("resource", {})),
            )  # fmt: skip
    if problems:
        raise BundleError(problems)
    if not policies:
        raise BundleError([Problem(str(directory), 0, "the bundle holds no policy")])
    return Bundle(
        policies=policies,
        hash=digest.hexdigest()[:16],
        files=tuple(str(f.relative_to(directory)) for f in files),
        source=str(directory),
    )


def _unknown_actions(scope: dict[str, Any]) -> set[str]:
    ents = []
    if scope.get("op") == "==":
        ents = [scope["entity"]]
    elif scope.get("op") == "in":
        ents = scope.get("entities") or [scope.get("entity")]
    groups = {k.value for k in catalogue.ActionType}
    return {e["id"] for e in ents if e and e["id"] not in groups and not catalogue.is_known(e["id"])}


def _index(policy_id: str) -> int:
    m = re.search(r"(\d+)$", policy_id)
    return int(m.group(1)) if m else 0


def _first_line(msg: str) -> str:
    return msg.strip().splitlines()[0] if msg.strip() else "parse error"


def _failing_statement(text: str) -> int:
    """Cedar's parser names no position: find the first statement that fails on its own."""
    lines = text.splitlines(keepends=True)
    starts = _statements(text)
    for i, start in enumerate(starts):
        end = starts[i + 1] - 1 if i + 1 < len(starts) else len(lines)
        chunk = "".join(lines[start - 1 : end])
        try:
            cedarpy.policies_to_json_str(chunk)
        except ValueError:
            return start
    return starts[0] if starts else 1


__all__ = ["DEFAULT_PACK", "Bundle", "BundleError", "Policy", "Problem", "Slice", "load_bundle"]
