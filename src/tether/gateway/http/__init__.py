"""The HTTP gateway (architecture §5): `/proxy/{upstream}/{path}` with route maps and credential injection.

Public surface: `HttpGateway` (the ASGI app), `load_config` / `HttpGatewayConfig` (the `http:`
section of the gateway config), `load_route_map` / `RouteMap` (YAML route maps; `graph` ships),
`normalise_path`, and `LeakScanner`.
"""

from tether.gateway.http.config import HttpGatewayConfig, Upstream, load_config
from tether.gateway.http.normalise import PathRefused, encode_path, normalise_path, parse_query
from tether.gateway.http.proxy import HttpGateway
from tether.gateway.http.routes import RouteMap, extract_facts, load_route_map
from tether.gateway.scan import LeakScanner

__all__ = [
    "HttpGateway",
    "HttpGatewayConfig",
    "LeakScanner",
    "PathRefused",
    "RouteMap",
    "Upstream",
    "encode_path",
    "extract_facts",
    "load_config",
    "load_route_map",
    "normalise_path",
    "parse_query",
]
