"""Tables of the approvals context: approval requests, break-glass grants, webhook deliveries."""

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, String, Table, Text

from tether.store.schema._meta import UTCDateTime, metadata

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    #: pending → approved | denied | expired;  approved → used | expired
    Column("status", String(20), nullable=False),
    Column("agent_id", String(40), nullable=False, index=True),
    Column("person_id", String(40), nullable=False, index=True),
    Column("sponsor_id", String(40), nullable=False),
    Column("actors", JSON, nullable=False),
    Column("task_id", String(40), nullable=False, index=True),
    Column("action", String(120), nullable=False),
    Column("resource", JSON, nullable=False),
    #: the call's arguments as the gateway redacted them for humans
    Column("summary", JSON, nullable=False),
    #: the prompt, sealed (AES-256-GCM, aad = approval id); NULL when none was given
    Column("prompt_sealed", LargeBinary),
    Column("gateway", String(20), nullable=False),
    Column("decision_id", String(40), nullable=False),
    Column("policy_ids", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("forbid_ids", JSON, nullable=False),
    Column("approver_rule", String(120), nullable=False),
    Column("bundle", String(120), nullable=False),
    Column("request_digest", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Column("decided_by", String(40)),
    Column("decision_reason", Text),
    Column("used_at", UTCDateTime),
    Index("ix_approvals_status_created", "status", "created_at"),
)

breakglass = Table(
    "breakglass",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("invoked_by", String(40), nullable=False),
    Column("agent_id", String(40), nullable=False, index=True),
    #: NULL: every task of the agent
    Column("task_id", String(40)),
    Column("justification", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("ended_by", String(40)),
    #: open until a second person closes it
    Column("review_status", String(20), nullable=False),
    Column("reviewed_by", String(40)),
    Column("reviewed_at", UTCDateTime),
    Column("review_note", Text),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("event", String(64), nullable=False),
    Column("subject_id", String(40), nullable=False, index=True),
    Column("url", String(2000), nullable=False),
    Column("format", String(10), nullable=False),
    #: pending → delivered | failed
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status", Integer),
    Column("last_error", String(500)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
