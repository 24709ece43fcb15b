"""Tool pins and the mapping of a tool call to (action, resource, facts).

Pin = SHA-256 of the RFC 8785 JSON of {name, title, description, inputSchema, outputSchema,
annotations} of the tool as the upstream lists it. A tool is usable only while its current
definition has the pin an operator approved (`tether mcp pin`).

Unmapped tools are `mcp:call` on `Tool::"<server>/<tool>"`; the annotations a policy sees
come from the catalog, else from the *pinned* definition, else the MCP defaults
(destructive, open world): an upstream cannot talk its way out of a policy.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.canon import digest
from tether.gateway.mcp.config import SENSITIVITIES, Expr, ExpressionError, Missing, ServerSpec

PIN_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
MCP_DEFAULTS = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}
MAX_ID = 1024


def tool_pin(definition: Mapping[str, Any]) -> str:
    """The pin of a tool definition (a `tools/list` entry as JSON)."""
    return digest({k: definition.get(k) for k in PIN_FIELDS})


class MappingFailed(ValueError):
    """The arguments do not yield the resource the catalog describes (missing, wrong type, escape)."""


@dataclass(frozen=True, slots=True)
class Mapped:
    action: str
    resource: Any  # tether.policy.Resource
    facts: dict[str, Any] = field(default_factory=dict)


def annotations_for(spec: ServerSpec, tool: str, pinned: Mapping[str, Any] | None) -> dict[str, bool]:
    """Catalog annotations, else the pinned definition's, else the MCP defaults, key by key."""
    out = dict(MCP_DEFAULTS)
    pinned_ann = (pinned or {}).get("annotations") or {}
    if isinstance(pinned_ann, Mapping):
        for k in MCP_DEFAULTS:
            if isinstance(pinned_ann.get(k), bool):
                out[k] = pinned_ann[k]
    ts = spec.tools.get(tool)
    if ts is not None:
        out.update(ts.annotations)
    return out


def _attrs(ann: Mapping[str, bool], server: str, tool: str) -> dict[str, Any]:
    return {
        "server": server,
        "name": tool,
        "read_only": ann["readOnlyHint"],
        "destructive": ann["destructiveHint"],
        "idempotent": ann["idempotentHint"],
        "open_world": ann["openWorldHint"],
    }


def map_call(spec: ServerSpec, tool: str, arguments: Mapping[str, Any], pinned: Mapping[str, Any] | None) -> Mapped:
    """The action, resource and request facts of one `tools/call`. Raises MappingFailed."""
    ann = annotations_for(spec, tool, pinned)
    ts = spec.tools.get(tool)
    facts: dict[str, Any] = {"tool": f"{spec.name}/{tool}", "argument_names": sorted(arguments)[:64]}
    if ts is None or ts.resource is None:
        action = ts.action if ts is not None else "mcp:call"
        resource = make_resource("Tool", f"{spec.name}/{tool}", spec.system_name, "internal", None,
                                 _attrs(ann, spec.name, tool))  # fmt: skip
    else:
        action = ts.action
        rs = ts.resource
        rid = _scalar(Expr.parse(rs.id), arguments, "resource id")
        sens = str(_scalar(Expr.parse(rs.sensitivity), arguments, "sensitivity"))
        if sens not in SENSITIVITIES:
            raise MappingFailed(f"sensitivity {sens[:40]!r} is not one of {', '.join(SENSITIVITIES)}")
        owner = _scalar(Expr.parse(rs.owner), arguments, "owner") if rs.owner else None
        resource = make_resource(rs.type, str(rid), spec.system_name, sens, None if owner is None else str(owner),
                                 _attrs(ann, spec.name, tool))  # fmt: skip
    if ts is not None:
        for key, source in ts.facts.items():
            try:
                value = Expr.parse(source).evaluate(arguments)
            except Missing:
                continue
            except ExpressionError as exc:
                raise MappingFailed(str(exc)) from None
            if isinstance(value, str | int | float | bool) or value is None:
                facts[key] = value
            elif isinstance(value, list) and all(isinstance(x, str | int | float | bool) for x in value):
                facts[key] = value[:256]
            else:
                raise MappingFailed(f"fact {key} must be a scalar or a list of scalars")
    return Mapped(action, resource, facts)


def _scalar(expr: Expr, arguments: Mapping[str, Any], what: str) -> Any:
    try:
        value = expr.evaluate(arguments)
    except Missing:
        raise MappingFailed(f"the arguments do not give the {what} ({expr.source} is missing)") from None
    except ExpressionError as exc:
        raise MappingFailed(str(exc)) from None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MappingFailed(f"the {what} ({expr.source}) must be a string or number, not {type(value).__name__}")
    if isinstance(value, str) and (len(value) > MAX_ID or any(ord(c) < 32 for c in value)):
        raise MappingFailed(f"the {what} ({expr.source}) is too long or holds control characters")
    return value


def make_resource(
    type_: str, rid: str, system: str, sensitivity: str, owner: str | None, attrs: Mapping[str, Any]
) -> Any:
    cls = _resource_class()
    return cls(type=type_, id=rid, system=system, sensitivity=sensitivity, owner=owner, attrs=dict(attrs))


_cls: list[Any] = []


def _resource_class() -> Any:
    if not _cls:
        try:
            _cls.append(getattr(importlib.import_module("tether.policy"), "Resource", _Resource))
        except ImportError:  # the policy context has not landed: same shape
            return _Resource
    return _cls[0]


@dataclass(frozen=True, slots=True)
class _Resource:
    type: str
    id: str
    system: str
    sensitivity: str = "internal"
    owner: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


__all__ = [
    "MCP_DEFAULTS",
    "PIN_FIELDS",
    "Mapped",
    "MappingFailed",
    "annotations_for",
    "make_resource",
    "map_call",
    "tool_pin",
]  # fmt: skip
