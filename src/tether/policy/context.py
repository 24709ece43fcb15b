"""The request context Cedar sees, sent with only the parts a slice can read.

Cedar parses the context JSON on every call, and that parse is most of the cost of a
decision on a small slice. Each slice therefore gets its own context *template*: the
attributes its policies read (`context.task.scopes`, `context.user.id` …) are found once,
when the slice is built, by walking the policies' EST; the template renders only those.
A policy that uses `context` other than through attribute access (`context == {…}`) gets
the whole record. Attributes a slice never reads cannot change its answer, so the
decision is the one the full context would give.

Where it can, a slice goes further and reads a *flat* record: its policies are rewritten
so that each attribute chain `context.task.usage.items` becomes one attribute
`context["task.usage.items"]`, and `context.task has usage` becomes the constant it always
is (the record's shape is fixed). Cedar builds a record per nesting level of the context,
so a flat one costs it less. A slice is left nested when a chain leaves the fixed shape
(an attribute Tether does not set, or one read through a set or a string), so a flat key
can never meet an attribute name a policy spells with a dot.

The full context still sets the size limit (its length is summed from pre-serialised
pieces, each of which fills one field of the template), and it is sent, to the policies as
written, instead of the slim one whenever Cedar might refuse it: a number outside Cedar's
64-bit `Long`, or an escaped UTF-16 surrogate in a string. A request that fails on the full
context fails the same way.

The same kind of walk lists the resource attributes a slice can read (`resource_reads`), so
the resource entity built for a request carries only those.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

#: The context record, field by field: a leaf names the piece that fills it. The key order
#: is the order of the full context (byte-identical to `json.dumps` of the same record).
LAYOUT: dict[str, Any] = {
    "action": "action",
    "user": {"id": "user_id", "email": "user_email", "groups": "user_groups", "entitlements": "user_entitlements"},
    "actors": "actors",
    "task": {
        "id": "task_id",
        "scopes": "task_scopes",
        "usage": {
            "items": "usage_items",
            "bytes": "usage_bytes",
            "calls": "usage_calls",
            "external_recipients": "usage_external_recipients",
        },
    },
    "request": {
        "recipients": "request_recipients",
        "external_recipients": "request_external_recipients",
        "size": "request_size",
        "items": "request_items",
    },
    "approved": "approved",
    "breakglass": "breakglass",
    "app_only": "app_only",
    "now": "now",
    "hour": "hour",
}

#: A projection: attribute → sub-projection, or None for "the whole value".
Spec = dict[str, Any] | None


def context_reads(policies: Iterable[Mapping[str, Any]]) -> Spec:
    """The context attributes the policies (EST) can read, as a projection; None = all of it."""
    paths: list[tuple[str, ...]] = []
    for est in policies:
        for cond in est.get("conditions", ()):
            if _walk(cond.get("body"), paths):
                return None
    spec: dict[str, Any] = {}
    for path in paths:
        node = spec
        for i, attr in enumerate(path):
            if attr in node and node[attr] is None:
                break  # already whole
            if i == len(path) - 1:
                node[attr] = None
            else:
                node = node.setdefault(attr, {})
    return spec


def _chain(node: Any) -> tuple[str, ...] | None:
    """The path `context.a.b…` reads (or `context.a has b` tests), or None if `node` is no such chain."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("has"), dict):
        arg = node["has"]
        prefix = _dots(arg.get("left"))
        return None if prefix is None or not isinstance(arg.get("attr"), str) else (*prefix, arg["attr"])
    return _dots(node)


def _walk(node: Any, paths: list[tuple[str, ...]]) -> bool:
    """Collect context paths under `node`; True when the whole context is used as a value."""
    chain = _chain(node)
    if chain is not None:
        if not chain:
            return True
        paths.append(chain)
        return False
    try:
        return any(_walk(child, paths) for child in _children(node))
    except _Unknown:
        return True


# EST expressions: `{op: arg}`. Literals and variables hold no expression; records map names
# to expressions; sets and extension calls list them; the other operators name them.
_LEAVES = frozenset({"Value", "Var", "Slot", "Unknown"})
_EXPRS = frozenset({"left", "right", "arg", "if", "then", "else", "in"})
_DATA = frozenset({"attr", "pattern", "entity_type"})


class _Unknown(Exception):
    """An EST shape this module does not know: whoever walks it must assume the worst."""


def _children(node: Any) -> list[Any]:
    """The sub-expressions of an EST expression."""
    if not (isinstance(node, dict) and len(node) == 1):
        raise _Unknown
    ((op, arg),) = node.items()
    if op in _LEAVES:
        return []
    if op == "Record" and isinstance(arg, dict):
        return list(arg.values())
    if isinstance(arg, list):
        return arg
    if isinstance(arg, dict) and arg.keys() <= _EXPRS | _DATA:
        return [v for k, v in arg.items() if k in _EXPRS]
    raise _Unknown


def _rebuild(node: dict[str, Any], f: Any) -> dict[str, Any]:
    """`node` with `f` applied to each sub-expression (a shape `_children` accepted)."""
    ((op, arg),) = node.items()
    if op in _LEAVES:
        return node
    if op == "Record":
        return {op: {k: f(v) for k, v in arg.items()}}
    if isinstance(arg, list):
        return {op: [f(v) for v in arg]}
    return {op: {k: f(v) if k in _EXPRS else v for k, v in arg.items()}}


def template(spec: Spec, layout: Mapping[str, Any] = LAYOUT) -> str:
    """A `str.format_map` template rendering the projection of the context, as `json.dumps` would."""
    parts = []
    for key, leaf in layout.items():
        if spec is not None and key not in spec:
            continue
        sub = None if spec is None else spec[key]
        value = "{" + leaf + "}" if isinstance(leaf, str) else template(sub, leaf)
        parts.append(json.dumps(key).replace("{", "{{").replace("}", "}}") + ": " + value)
    return "{{" + ", ".join(parts) + "}}"


SEP = "."


class _Nested(Exception):
    """The slice cannot be flattened: leave it as it is."""


def flatten(policies: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], str] | None:
    """The policies (EST) rewritten to read a flat context, and that context's template; None if not possible."""
    keys: dict[tuple[str, ...], None] = {}
    rewritten = []
    try:
        for est in policies:
            conditions = [{**c, "body": _flat(c.get("body"), keys)} for c in est.get("conditions", ())]
            rewritten.append({**est, "conditions": conditions})
    except (_Nested, _Unknown):
        return None
    parts = []
    for path in keys:
        node = _at(path)
        value = "{" + node + "}" if isinstance(node, str) else template(None, node)
        parts.append(json.dumps(SEP.join(path)).replace("{", "{{").replace("}", "}}") + ": " + value)
    return rewritten, "{{" + ", ".join(parts) + "}}"


def _dots(node: Any) -> tuple[str, ...] | None:
    """The path of a pure `context.a.b…` chain (() for `context` itself), else None."""
    if isinstance(node, dict) and len(node) == 1:
        ((op, arg),) = node.items()
        if op == "Var":
            return () if arg == "context" else None
        if op == "." and isinstance(arg, dict) and isinstance(arg.get("attr"), str):
            left = _dots(arg.get("left"))
            return None if left is None else (*left, arg["attr"])
    return None


def _at(path: tuple[str, ...]) -> Any:
    """The LAYOUT node at `path` (a piece name or a record); _Nested if the path leaves the shape."""
    node: Any = LAYOUT
    for attr in path:
        if not isinstance(node, dict) or attr not in node:
            raise _Nested
        node = node[attr]
    return node


def _flat(node: Any, keys: dict[tuple[str, ...], None]) -> Any:
    path = _dots(node)
    if path == ():
        raise _Nested  # the whole context as a value
    if path is not None:
        _at(path)
        keys[path] = None
        return {".": {"left": {"Var": "context"}, "attr": SEP.join(path)}}
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("has"), dict):
        arg = node["has"]
        prefix = _dots(arg.get("left"))
        if prefix is not None and isinstance(arg.get("attr"), str):
            record = _at(prefix)
            if not isinstance(record, dict):
                raise _Nested  # `has` on a string or set: leave Cedar its own answer
            return {"Value": arg["attr"] in record}
    _children(node)  # raises on a shape this module does not know
    return _rebuild(node, lambda child: _flat(child, keys))


def resource_reads(policies: Iterable[Mapping[str, Any]]) -> frozenset[str] | None:
    """The resource attributes the policies (EST) can read; None = any of them.

    The resource entity is built per request, and Cedar parses each attribute it is given,
    so a slice gets only those it reads: `resource.a` and `resource has a`. Attribute access
    on anything that might evaluate to the resource another way (an entity literal, an
    `if`) keeps every attribute. Chains from `principal`, `action` and `context` cannot reach
    it: no attribute Tether sets refers to a resource.
    """
    attrs: set[str] = set()
    for est in policies:
        for cond in est.get("conditions", ()):
            if _reads_resource(cond.get("body"), attrs):
                return None
    return frozenset(attrs)


def _rooted(node: Any) -> bool:
    """A pure attribute chain from `principal`, `action` or `context`."""
    while isinstance(node, dict) and len(node) == 1 and isinstance(node.get("."), dict):
        node = node["."].get("left")
    return isinstance(node, dict) and node.get("Var") in ("principal", "action", "context") and len(node) == 1


def _reads_resource(node: Any, attrs: set[str]) -> bool:
    """Collect `resource.a` / `resource has a` under `node`; True when attributes may be read another way."""
    if isinstance(node, dict) and len(node) == 1:
        ((op, arg),) = node.items()
        if op in (".", "has") and isinstance(arg, dict) and isinstance(arg.get("attr"), str):
            left = arg.get("left")
            if left == {"Var": "resource"}:
                attrs.add(arg["attr"])
                return False
            if not _rooted(left):
                return True  # anything but a chain from principal/action/context might be the resource
    try:
        return any(_reads_resource(child, attrs) for child in _children(node))
    except _Unknown:
        return True


def leaves(layout: Mapping[str, Any] = LAYOUT) -> list[str]:
    """The names of the pieces a full context is made of."""
    out: list[str] = []
    for leaf in layout.values():
        out.extend([leaf] if isinstance(leaf, str) else leaves(leaf))
    return out


FULL = template(None)

__all__ = ["FULL", "LAYOUT", "SEP", "context_reads", "flatten", "leaves", "resource_reads", "template"]
