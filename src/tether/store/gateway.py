"""SQL store of the MCP gateway's tool pins. Approving a pin is audited in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update

from tether.audit.chain import append
from tether.audit.model import Event
from tether.store.db import Database
from tether.store.schema.gateway import mcp_tool_pins
from tether.types import utcnow


class SqlPinStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
        """(server, tool) → (pin, definition) of every approved tool."""
        with self.db.read() as conn:
            rows = conn.execute(select(mcp_tool_pins)).all()
        return {(r.server, r.tool): (r.pin, dict(r.definition)) for r in rows}

    def approve(self, actor: str, server: str, tool: str, pin: str, definition: Mapping[str, Any]) -> bool:
        """Record `pin` as the approved definition of server/tool; False when it already was."""
        with self.db.write() as conn:
            row = conn.execute(
                select(mcp_tool_pins.c.pin).where(mcp_tool_pins.c.server == server, mcp_tool_pins.c.tool == tool)
            ).first()
            if row is not None and row.pin == pin:
                return False
            values = {"pin": pin, "definition": dict(definition), "approved_by": actor, "approved_at": utcnow()}
            if row is None:
                conn.execute(insert(mcp_tool_pins).values(server=server, tool=tool, **values))
            else:
                conn.execute(
                    update(mcp_tool_pins)
                    .where(mcp_tool_pins.c.server == server, mcp_tool_pins.c.tool == tool)
                    .values(**values)
                )
            append(conn, [Event(
                type="tool.pinned", actor=actor,
                resource={"type": "Tool", "id": f"{server}/{tool}", "system": f"mcp:{server}"},
                detail={"server": server, "tool": tool, "pin": pin, "previous": row.pin if row else None},
            )])  # fmt: skip
            return True

    def remove(self, actor: str, server: str, tool: str) -> bool:
        with self.db.write() as conn:
            n = conn.execute(
                delete(mcp_tool_pins).where(mcp_tool_pins.c.server == server, mcp_tool_pins.c.tool == tool)
            ).rowcount
            if n:
                append(conn, [Event(type="tool.unpinned", actor=actor, detail={"server": server, "tool": tool})])
            return bool(n)


__all__ = ["SqlPinStore"]
