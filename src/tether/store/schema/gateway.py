"""Tables of the gateways: the MCP tool pins an operator approved (rug-pull defence), task usage."""

from sqlalchemy import JSON, Column, String, Table

from tether.store.schema._meta import BigInt, UTCDateTime, metadata

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

#: Per-task usage the gateways count (`context.task.usage`): one row per task, shared by every
#: process serving the same database. The audit writer adds each batch's deltas in the batch's own
#: transaction, so the counters and the chain never disagree about what was committed.
task_usage = Table(
    "task_usage",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("items", BigInt, nullable=False, default=0),
    Column("bytes", BigInt, nullable=False, default=0),
    Column("calls", BigInt, nullable=False, default=0),
    Column("external_recipients", BigInt, nullable=False, default=0),
    #: seq of the audit batch that last changed the row: processes poll for rows past their watermark
    Column("updated_seq", BigInt, nullable=False, index=True),
)
