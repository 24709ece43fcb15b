"""Reviewing and approving tool definitions (`tether mcp pin`): the rug-pull defence's write side.

The operator's tool connects to the upstream on its own session, lists the tools, and
records the pin of each definition it approves. The gateway hides and refuses any tool
whose current definition does not have an approved pin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tether.gateway.mcp.catalog import tool_pin
from tether.gateway.mcp.config import ServerSpec
from tether.gateway.mcp.upstream import HeaderSource, UpstreamPool

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
    """The server's current tool definitions, from a session of its own (closed afterwards)."""
    pool = UpstreamPool({spec.name: spec}, headers=headers)
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
