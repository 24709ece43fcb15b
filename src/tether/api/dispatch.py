"""Hot paths handed to their gateway ahead of FastAPI's middleware stack and router.

The router matches and prepares routes on every request, and each layer of the middleware
stack (server errors, telemetry, body limit, metrics) adds its own coroutine and `send`
wrapper; together they cost more than a gateway's own parsing of a tool or API call.
`/proxy/…` and `/mcp` are therefore dispatched by `tether.api.app.TetherApp` before any of
that, keeping only what those paths need from it: the request metrics and the problem
document of an unexpected error (the gateways answer their own errors and cap their bodies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Dispatch:
    """HTTP requests whose path is `path`, or starts with `prefix`, go straight to `target` (an ASGI app)."""

    target: Any
    path: str | None = None
    prefix: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.prefix is None):
            raise ValueError("give exactly one of path and prefix")
        if self.prefix is not None and not self.prefix.endswith("/"):
            raise ValueError("a prefix ends with '/'")

    @property
    def template(self) -> str:
        """The route label of its requests in the metrics, as for requests no route matched: `/{first segment}`."""
        key = self.path if self.path is not None else self.prefix
        assert key is not None
        return "/" + key.lstrip("/").split("/", 1)[0]


class HotPaths:
    """The dispatch table: exact paths by dict lookup, then prefixes in order."""

    def __init__(self, entries: list[Dispatch]) -> None:
        self.exact: dict[str, tuple[Any, str]] = {}
        self.prefixes: tuple[tuple[str, Any, str], ...] = ()
        for e in entries:
            if e.path is not None:
                self.exact[e.path] = (e.target, e.template)
            else:
                assert e.prefix is not None
                self.prefixes += ((e.prefix, e.target, e.template),)

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def find(self, path: str) -> tuple[Any, str] | None:
        """(target, metrics route label) of a hot path, or None."""
        hit = self.exact.get(path)
        if hit is not None:
            return hit
        for prefix, target, template in self.prefixes:
            if path.startswith(prefix):
                return target, template
        return None


__all__ = ["Dispatch", "HotPaths"]
