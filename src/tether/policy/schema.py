"""Tether's Cedar schema, generated from the action catalogue so the two never drift apart.

Principal: `Agent` (the actor acting now). Its sponsor is a `Person`. The person the agent
acts for is `context.user`; earlier actors of a multi-hop chain are `context.actors`.
Resources share one shape (`system`, `sensitivity` level 0..3, `label`, `owner`); tools add
their MCP annotations. Actions are `Action::"system:verb"`, each a member of its action
type group (`Action::"read"`, `"write"`, `"delete"`, `"share"`, `"execute"`, `"admin"`).
"""

from __future__ import annotations

from typing import Any

from tether import actions as catalogue
from tether.actions import ActionType

RESOURCE_TYPES = (
    "MailMessage", "Mailbox", "MailFolder", "CalendarEvent", "Calendar", "DriveItem", "Drive", "Site", "List",
    "User", "Tool", "McpResource", "Prompt", "Repository", "HttpResource",
)  # fmt: skip

_S = {"type": "String"}
_L = {"type": "Long"}
_B = {"type": "Boolean"}
_SET_S = {"type": "Set", "element": {"type": "String"}}


def _rec(attrs: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Record", "attributes": attrs}


RESOURCE_SHAPE = {"system": _S, "sensitivity": _L, "label": _S, "owner": _S}
TOOL_SHAPE = {**RESOURCE_SHAPE, "server": _S, "name": _S, "read_only": _B, "destructive": _B, "open_world": _B}

CONTEXT_SHAPE = _rec(
    {
        "action": _S,
        "user": _rec({"id": _S, "email": _S, "groups": _SET_S, "entitlements": _SET_S}),
        "actors": _SET_S,
        "task": _rec(
            {
                "id": _S,
                "scopes": _SET_S,
                "usage": _rec({"items": _L, "bytes": _L, "calls": _L, "external_recipients": _L}),
            }
        ),
        "request": _rec({"recipients": _L, "external_recipients": _L, "size": _L, "items": _L}),
        "approved": _B,
        "breakglass": _B,
        "app_only": _B,
        "now": _L,
        "hour": _L,
    }
)


def schema_json() -> dict[str, Any]:
    entity_types: dict[str, Any] = {
        "Person": {"shape": _rec({"email": _S, "groups": _SET_S, "status": _S})},
        "Agent": {
            "shape": _rec(
                {
                    "sponsor": {"type": "Entity", "name": "Person"},
                    "owner_team": _S,
                    "mode": _S,
                    "status": _S,
                    "review_overdue": _B,
                }
            )
        },
    }
    for t in RESOURCE_TYPES:
        entity_types[t] = {"shape": _rec(TOOL_SHAPE if t == "Tool" else RESOURCE_SHAPE)}
    actions: dict[str, Any] = {kind.value: {} for kind in ActionType}
    for name, kind in sorted(catalogue.all_actions().items()):
        actions[name] = {
            "memberOf": [{"id": kind.value}],
            "appliesTo": {
                "principalTypes": ["Agent"],
                "resourceTypes": list(RESOURCE_TYPES),
                "context": CONTEXT_SHAPE,
            },
        }
    return {"": {"entityTypes": entity_types, "actions": actions}}


def action_entities() -> list[dict[str, Any]]:
    """Action entities with their group parents (so `action in Action::"read"` works)."""
    out: list[dict[str, Any]] = [
        {"uid": {"type": "Action", "id": kind.value}, "attrs": {}, "parents": []} for kind in ActionType
    ]
    for name, kind in catalogue.all_actions().items():
        out.append(
            {"uid": {"type": "Action", "id": name}, "attrs": {}, "parents": [{"type": "Action", "id": kind.value}]}
        )
    return out


__all__ = ["CONTEXT_SHAPE", "RESOURCE_TYPES", "action_entities", "schema_json"]
