"""The MCP gateway (architecture §5): `/mcp` and `tether mcp stdio` in front of declared MCP servers.

Public surface: `McpGateway` (the ASGI app), `load_config` (the `mcp:` section of the gateway
config), `tool_pin` (the rug-pull pin of a tool definition) and `wellknown_router` (RFC 9728
protected-resource metadata).
"""

from tether.gateway.mcp.catalog import map_call, tool_pin
from tether.gateway.mcp.config import McpGatewayConfig, ServerSpec, ToolSpec, load_config
from tether.gateway.mcp.gateway import McpGateway
from tether.gateway.mcp.wellknown import mcp_router

__all__ = ["McpGateway", "McpGatewayConfig", "ServerSpec", "ToolSpec", "load_config", "map_call", "mcp_router",
           "tool_pin"]  # fmt: skip
