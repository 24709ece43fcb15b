"""RFC 9728 protected-resource metadata for each declared upstream: `{base}/proxy/{upstream}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tether.errors import NotFound
from tether.gateway.http.proxy import HttpGateway


def proxy_metadata_router(gateway: HttpGateway, issuer: str) -> APIRouter:
    """`/.well-known/oauth-protected-resource/proxy/{upstream}` (path-inserted form, RFC 9728 §3.1)."""
    router = APIRouter()

    async def metadata(upstream: str) -> Any:
        if upstream not in gateway.config.upstreams:
            raise NotFound("no upstream of that name is declared")
        scopes = sorted({r.spec.action for routes in gateway.maps[upstream].routes.values() for r in routes})
        doc = {
            "resource": f"{gateway.base_url}/proxy/{upstream}",
            "authorization_servers": [issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": scopes,
            "resource_name": f"Tether HTTP gateway: {upstream}",
        }
        return JSONResponse(doc, headers={"cache-control": "max-age=300"})

    router.add_api_route(
        "/.well-known/oauth-protected-resource/proxy/{upstream}", metadata, methods=["GET"], include_in_schema=False
    )
    return router


__all__ = ["proxy_metadata_router"]
