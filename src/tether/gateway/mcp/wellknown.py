"""Routes of the MCP gateway on the main app: `/mcp` itself and its RFC 9728 metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.routing import Route

from tether.gateway.mcp.gateway import McpGateway


def mcp_router(gateway: McpGateway, issuer: str) -> APIRouter:
    """`/mcp` (exact path, every method handled by the gateway) and the protected-resource metadata.

    The metadata is served in the path-inserted form RFC 9728 §3.1 defines for `{base}/mcp`
    (`/.well-known/oauth-protected-resource/mcp`) and at the root as a fallback for clients
    that probe there first.
    """
    router = APIRouter()

    async def metadata() -> Any:
        return JSONResponse(gateway.protected_resource_metadata(issuer), headers={"cache-control": "max-age=300"})

    router.add_api_route(
        "/.well-known/oauth-protected-resource/mcp", metadata, methods=["GET"], include_in_schema=False
    )
    router.add_api_route("/.well-known/oauth-protected-resource", metadata, methods=["GET"], include_in_schema=False)
    router.routes.append(Route("/mcp", gateway, methods=["GET", "POST", "DELETE", "OPTIONS"], include_in_schema=False))
    return router


__all__ = ["mcp_router"]
