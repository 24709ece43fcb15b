"""Reviewing and approving tool definitions (`tether mcp pin`): the rug-pull defence's write side.

The operator's tool connects to the upstream on its own session, lists the tools, and
records the pin of each definition it approves. The gateway hides and refuses any tool
whose current definition does not have an approved pin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tether.canon import canonical_fast
from tether.gateway.mcp.catalog import tool_pin
from tether.gateway.mcp.config import ServerSpec
from tether.gateway.mcp.upstream import HeaderSource, UpstreamPool
from tether.gateway.scan import LeakScanner
from tether.log import get_logger

log = get_logger("tether.gateway.mcp")

MIN_SECRET = 8  # shorter header values are not scanned for (they would match by chance)

PIN_SESSION = ("tether:pin", "tether:pin")


@dataclass(frozen=True, slots=True)
class ToolReview:
    tool: str
    pin: str
    pinned: str | None  # the approved pin, if any
    definition: dict[str, Any]

    @property
    def status(self) -> str:
        if self.pinned is None:
            return "unpinned"
        return "pinned" if self.pinned == self.pin else "changed"


async def fetch_tools(spec: ServerSpec, headers: HeaderSource | None = None) -> dict[str, dict[str, Any]]:
    """The server's current tool definitions, from a session of its own (closed afterwards).

    A definition that holds the credential injected for the session (a server reflecting its
    request headers into a description, say) is left out, with an error in the log: it can be
    neither shown to the operator nor pinned, so the secret never reaches the pin store.
    """
    injected: set[str] = set()

    async def capturing(s: ServerSpec, person: str, task: str) -> Mapping[str, str]:
        assert headers is not None
        h = await headers(s, person, task)
        for value in h.values():
            injected.add(value)
            scheme, _, rest = value.partition(" ")
            if rest and scheme.isalpha():
                injected.add(rest.strip())
        return h

    pool = UpstreamPool({spec.name: spec}, headers=capturing if headers is not None else None)
    key = (spec.name, *PIN_SESSION)
    tools: dict[str, dict[str, Any]] = {}
    try:
        cursor: str | None = None
        for _ in range(50):
            res = await pool.request(key, "tools/list", {"cursor": cursor} if cursor else None, retry=True)
            for t in res.get("tools") or []:
                if isinstance(t, dict) and isinstance(t.get("name"), str):
                    tools.setdefault(t["name"], t)
            cursor = res.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
    finally:
        await pool.close()
    secrets = [v for v in injected if len(v) >= MIN_SECRET]
    if secrets:
        scanner = LeakScanner(secrets)
        for name in [n for n, d in tools.items() if scanner.contains(canonical_fast(d))]:
            log.error("tool definition holds the credential injected for its server: left out, cannot be pinned",
                      server=spec.name, tool=name)  # fmt: skip
            del tools[name]
    return tools


async def review(store: Any, spec: ServerSpec, headers: HeaderSource | None = None) -> list[ToolReview]:
    tools = await fetch_tools(spec, headers)
    pins = store.all()
    return [
        ToolReview(name, tool_pin(d), pins.get((spec.name, name), (None, {}))[0], d)
        for name, d in sorted(tools.items())
    ]


async def pin_tools(
    store: Any, spec: ServerSpec, only: Iterable[str] | None, *, actor: str, headers: HeaderSource | None = None
) -> list[ToolReview]:
    """Approve the current definitions of `only` (all tools when None); returns what was newly pinned."""
    reviews = await review(store, spec, headers)
    wanted = set(only) if only is not None else None
    if wanted is not None:
        missing = wanted - {r.tool for r in reviews}
        if missing:
            raise KeyError(f"server {spec.name} has no tool named {', '.join(sorted(missing))}")
    done = []
    for r in reviews:
        if (wanted is None or r.tool in wanted) and store.approve(actor, spec.name, r.tool, r.pin, r.definition):
            done.append(r)
    return done


__all__ = ["ToolReview", "fetch_tools", "pin_tools", "review"]
