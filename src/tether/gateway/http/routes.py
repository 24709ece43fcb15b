"""Route maps: method + path template → action, resource and request facts, per upstream.

A route map is YAML (`graph.yaml` ships for Microsoft Graph v1.0):

    name: graph
    prefixes:                       # @mailbox/messages expands to each prefix
      mailbox: [/v1.0/me, "/v1.0/users/{user}"]
    routes:
      - name: messages.send
        method: POST
        paths: ["@mailbox/sendMail"]
        action: mail:send
        resource: {type: Mailbox, system: m365.mail, id: "{user}", sensitivity: internal}
        facts:                      # JSON paths into the body; "#path" counts; "query:$top" reads the query
          recipients: [message.toRecipients[*].emailAddress.address]
        max_body: 4194304

Templates match whole normalised segments; literal text is compared case-insensitively,
`{param}` matches one segment (no `/` or `:`) and keeps its case. `{user}` defaults to
`me` (the task's person). The first matching route wins; no match is a deny.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tether import actions

SENSITIVITIES = ("public", "internal", "confidential", "highly_confidential")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class ResourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    system: str
    id: str = "{user}"
    owner: str | None = "{user}"
    sensitivity: str = "internal"
    #: paths (on the upstream, with params) whose JSON answer carries a sensitivity label; the
    #: first whose params the request has is used (`{user}` is always there: `me` → the person)
    label: list[str] = Field(default_factory=list)

    @field_validator("sensitivity")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SENSITIVITIES:
            raise ValueError(f"sensitivity must be one of {', '.join(SENSITIVITIES)}")
        return v


class LookupSpec(BaseModel):
    """Facts the request does not carry, read from the upstream before the decision with the gateway's
    own credential: a reply goes to the original message's sender, a reply-all to all its recipients."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: paths (on the upstream, with params) whose JSON answer holds the facts; the first whose params the
    #: request has is used (`{user}` is always there: `me` → the person)
    paths: list[str] = Field(min_length=1)
    #: fact name → JSON paths into that answer; the values join the request's own values of that fact
    facts: dict[str, list[str]] = Field(min_length=1)
    #: a JSON path naming whom the resource is from, and facts joined only when that is the mailbox's owner (or
    #: the owner has no known address): a reply to one's own sent message goes to that message's recipients
    owner_path: str | None = None
    own_facts: dict[str, list[str]] = Field(default_factory=dict)


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    method: str
    paths: list[str]
    action: str
    resource: ResourceSpec
    facts: dict[str, list[str]] = Field(default_factory=dict)
    #: JSON field of the response whose list length counts as items read
    items: str | None = "value"
    max_body: int | None = Field(None, ge=0)
    lookup: LookupSpec | None = None
    batch: bool = False

    @field_validator("method")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class RouteMapDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `x-…` keys hold YAML anchors
    name: str
    prefixes: dict[str, list[str]] = Field(default_factory=dict)
    #: actions this map adds to the catalogue, with their type (read, write, delete, share, …)
    actions: dict[str, str] = Field(default_factory=dict)
    max_body: int = Field(4 * 1024 * 1024, ge=0)
    routes: list[RouteSpec]


@dataclass(frozen=True, slots=True)
class Route:
    spec: RouteSpec
    pattern: re.Pattern[str]
    template: str
    max_body: int


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    params: Mapping[str, str]

    @property
    def spec(self) -> RouteSpec:
        return self.route.spec


def _compile(template: str) -> re.Pattern[str]:
    if not template.startswith("/"):
        raise ValueError(f"path template {template!r} must start with /")
    parts = []
    for seg in template.strip("/").split("/"):
        pos, rx = 0, ""
        for m in _PARAM.finditer(seg):
            rx += re.escape(seg[pos : m.start()]) + f"(?P<{m.group(1)}>[^/:]+)"
            pos = m.end()
        parts.append(rx + re.escape(seg[pos:]))
    return re.compile("/" + "/".join(parts), re.IGNORECASE)


class RouteMap:
    def __init__(self, doc: RouteMapDoc) -> None:
        self.name = doc.name
        for action, kind in doc.actions.items():
            actions.register(action, kind)
        self.routes: dict[str, list[Route]] = {}
        for spec in doc.routes:
            if not actions.is_known(spec.action):
                raise ValueError(f"route {spec.name}: unknown action {spec.action} (declare it under actions:)")
            for raw in spec.paths:
                for template in self._expand(raw, doc.prefixes):
                    route = Route(spec, _compile(template), template, spec.max_body or doc.max_body)
                    self.routes.setdefault(spec.method, []).append(route)

    @staticmethod
    def _expand(raw: str, prefixes: Mapping[str, list[str]]) -> list[str]:
        if not raw.startswith("@"):
            return [raw]
        name, _, rest = raw[1:].partition("/")
        if name not in prefixes:
            raise ValueError(f"unknown prefix @{name}")
        return [p + ("/" + rest if rest else "") for p in prefixes[name]]

    def match(self, method: str, segments: Sequence[str]) -> RouteMatch | None:
        path = "/" + "/".join(segments)
        for route in self.routes.get(method.upper(), ()):
            m = route.pattern.fullmatch(path)
            if m:
                return RouteMatch(route, m.groupdict())
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self.routes.values())


def load_route_map(ref: str | Path) -> RouteMap:
    """A shipped map by name (`graph`) or a YAML file."""
    if isinstance(ref, str) and "/" not in ref and not ref.endswith((".yaml", ".yml")):
        text = resources.files("tether.gateway.http").joinpath("maps", f"{ref}.yaml").read_text()
    else:
        text = Path(ref).read_text()
    return RouteMap(RouteMapDoc.model_validate(yaml.safe_load(text)))


# ---------------------------------------------------------------------- facts


def _walk(doc: Any, path: str) -> list[Any]:
    """Values at a dotted path with `[*]` for every element of a list."""
    cur: list[Any] = [doc]
    for part in path.split("."):
        star = part.endswith("[*]")
        key = part[:-3] if star else part
        nxt: list[Any] = []
        for v in cur:
            if key:
                v = v.get(key) if isinstance(v, dict) else None
            if v is None:
                continue
            if star:
                nxt.extend(v if isinstance(v, list) else [])
            else:
                nxt.append(v)
        cur = nxt
    return cur


def extract_facts(
    spec: RouteSpec,
    body: Any,
    query: Sequence[tuple[str, str]],
    tenant_domains: Sequence[str],
    upstream_doc: Any = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Request facts for policy: the route's JSON paths, and recipients counted against the tenant.

    `upstream_doc` is the answer to the route's lookup (`LookupSpec`); a route with a lookup and no
    answer (it could not be read) counts one recipient outside the tenant, as anyone (fail closed).
    `owner`: the mailbox owner's address, for the lookup's `own_facts` (None: unknown, so they count).
    """  # fmt: skip
    facts: dict[str, Any] = {}
    q = dict(query)
    for name, paths in spec.facts.items():
        values: list[Any] = []
        count = 0
        for p in paths:
            if p.startswith("query:"):
                if p[6:] in q:
                    values.append(q[p[6:]])
            elif p.startswith("#"):
                count += sum(len(v) if isinstance(v, list) else 1 for v in _walk(body, p[1:]))
            else:
                values.extend(v for v in _walk(body, p) if isinstance(v, str | int | float | bool))
        facts[name] = count if all(p.startswith("#") for p in paths) else values
    unknown = spec.lookup is not None and not isinstance(upstream_doc, dict)
    if spec.lookup is not None and not unknown:
        lookup = spec.lookup
        groups = [lookup.facts]
        if lookup.own_facts and lookup.owner_path:
            senders = {str(v).strip().lower() for v in _walk(upstream_doc, lookup.owner_path)}
            if owner is None or owner.strip().lower() in senders:
                groups.append(lookup.own_facts)
        for group in groups:
            for name, paths in group.items():
                found = [v for p in paths for v in _walk(upstream_doc, p) if isinstance(v, str | int | float | bool)]
                facts[name] = [*(facts.get(name) or []), *found]
    if "recipients" in facts:
        recips = sorted({str(r).strip().lower() for r in facts["recipients"] if str(r).strip()})
        domains = {d.lower() for d in tenant_domains}
        external = [r for r in recips if r.rsplit("@", 1)[-1] not in domains]
        facts["recipients"] = recips
        facts["external_recipients"] = len(external)
        facts["external_domains"] = sorted({r.rsplit("@", 1)[-1] for r in external})
    if "link_scope" in facts:
        scopes = (
            {str(v).strip().lower() for v in facts["link_scope"]} if isinstance(facts["link_scope"], list) else set()
        )
        # A link anyone can open leaves the tenant: it counts as an external recipient. No scope at all is
        # the organisation's default, which may be anyone: counted the same way (fail closed).
        if not scopes or "anonymous" in scopes:
            _count_anyone(facts)
    if unknown and spec.lookup is not None and "recipients" in spec.lookup.facts:
        _count_anyone(facts)
    return facts


def _count_anyone(facts: dict[str, Any]) -> None:
    """One more recipient outside the tenant, who may be anyone (`*`)."""
    facts["external_recipients"] = int(facts.get("external_recipients", 0) or 0) + 1
    facts["external_domains"] = sorted({*facts.get("external_domains", []), "*"})


__all__ = [
    "SENSITIVITIES",
    "LookupSpec",
    "Route",
    "RouteMap",
    "RouteMapDoc",
    "RouteMatch",
    "RouteSpec",
    "extract_facts",
    "load_route_map",
]
