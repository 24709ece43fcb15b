"""The action catalogue: every action is `system:verb` and belongs to one action type.

It is the single source for identity (ceilings, entitlements, advisory agents), the
Cedar schema (action groups) and the gateways' catalogs. Catalogs of MCP tools and HTTP
routes may register further actions at load time, each with its type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum


class ActionType(StrEnum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    SHARE = "share"
    EXECUTE = "execute"
    ADMIN = "admin"


ACTION_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}:[a-z][a-z0-9_-]{0,47}$")

_BUILTIN: dict[str, ActionType] = {
    # mail (Graph messages, mailFolders)
    "mail:read": ActionType.READ,
    "mail:draft": ActionType.WRITE,
    "mail:move": ActionType.WRITE,
    "mail:send": ActionType.SHARE,
    "mail:reply": ActionType.SHARE,
    "mail:forward": ActionType.SHARE,
    "mail:delete": ActionType.DELETE,
    # calendar
    "calendar:read": ActionType.READ,
    "calendar:write": ActionType.WRITE,
    "calendar:respond": ActionType.WRITE,
    "calendar:delete": ActionType.DELETE,
    # files (OneDrive, SharePoint drive items)
    "files:read": ActionType.READ,
    "files:write": ActionType.WRITE,
    "files:delete": ActionType.DELETE,
    "files:share": ActionType.SHARE,
    # sites and lists
    "sites:read": ActionType.READ,
    "sites:write": ActionType.WRITE,
    # directory
    "users:read": ActionType.READ,
    "directory:admin": ActionType.ADMIN,
    # git (mcp-server-git and similar)
    "git:read": ActionType.READ,
    "git:write": ActionType.WRITE,
    # MCP generic: unmapped tools, resources and prompts
    "mcp:call": ActionType.EXECUTE,
    "mcp:read": ActionType.READ,
    # generic HTTP
    "http:read": ActionType.READ,
    "http:write": ActionType.WRITE,
    "http:delete": ActionType.DELETE,
}

_registry: dict[str, ActionType] = dict(_BUILTIN)


class UnknownAction(ValueError):
    def __init__(self, actions: Iterable[str]) -> None:
        self.actions = sorted(set(actions))
        super().__init__(f"unknown action(s): {', '.join(self.actions)}")


def register(action: str, action_type: ActionType | str) -> None:
    """Add an action (from a tool catalog or route map). Re-registering must agree."""
    if not ACTION_RE.match(action):
        raise ValueError(f"action {action!r} is not of the form system:verb")
    kind = ActionType(action_type)
    known = _registry.get(action)
    if known is not None and known is not kind:
        raise ValueError(f"action {action} is already a {known.value} action, not {kind.value}")
    _registry[action] = kind


def action_type(action: str) -> ActionType:
    try:
        return _registry[action]
    except KeyError:
        raise UnknownAction([action]) from None


def is_known(action: str) -> bool:
    return action in _registry


def all_actions() -> dict[str, ActionType]:
    return dict(_registry)


def expand(patterns: Iterable[str]) -> list[str]:
    """Expand `system:*` wildcards and check every name; raises UnknownAction naming all unknown."""
    out: set[str] = set()
    unknown: list[str] = []
    for p in patterns:
        if p.endswith(":*"):
            system = p[:-2]
            matched = [a for a in _registry if a.split(":", 1)[0] == system]
            if not matched:
                unknown.append(p)
            out.update(matched)
        elif p in _registry:
            out.add(p)
        else:
            unknown.append(p)
    if unknown:
        raise UnknownAction(unknown)
    return sorted(out)


__all__ = [
    "ACTION_RE",
    "ActionType",
    "UnknownAction",
    "action_type",
    "all_actions",
    "expand",
    "is_known",
    "register",
]
