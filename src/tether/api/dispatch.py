"""Hot paths handed to their gateway ahead of FastAPI's router.

The router matches and prepares routes on every request, which costs more than a gateway's
own parsing of a tool or API call; `/proxy/…` and `/mcp` are dispatched here instead.
"""

from __future__ import annotations

from typing import Any


class Dispatch:
    """ASGI middleware: HTTP requests whose path is `path`, or starts with `prefix`, go straight to `target`."""

    def __init__(self, app: Any, *, target: Any, path: str | None = None, prefix: str | None = None) -> None:
        if (path is None) == (prefix is None):
            raise ValueError("give exactly one of path and prefix")
        self.app = app
        self.target = target
        self.path = path
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (
            scope["path"] == self.path if self.prefix is None else scope["path"].startswith(self.prefix)
        ):
            await self.target(scope, receive, send)
        else:
            await self.app(scope, receive, send)


__all__ = ["Dispatch"]
