"""Tables of the gateways: the MCP tool pins an operator approved (rug-pull defence)."""

from sqlalchemy import JSON, Column, String, Table

from tether.store.schema._meta import UTCDateTime, metadata

#: One approved definition per (server, tool): its pin and the definition it was computed from.
mcp_tool_pins = Table(
    "mcp_tool_pins",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("tool", String(128), primary_key=True),
    #: SHA-256 (hex) of the RFC 8785 JSON of {name, title, description, inputSchema, outputSchema, annotations}
    Column("pin", String(64), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("approved_by", String(64), nullable=False),
    Column("approved_at", UTCDateTime, nullable=False),
)
