"""Tables of the identity context: persons, agents, delegations, group mappings, admin tokens."""

from sqlalchemy import JSON, Column, Date, ForeignKey, Index, Integer, String, Table, Text

from tether.store.schema._meta import UTCDateTime, metadata

persons = Table(
    "persons",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("issuer", String(255), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("groups", JSON, nullable=False),
    Column("roles", JSON, nullable=False),
    Column("entitlements", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deprovisioned_at", UTCDateTime),
    Index("uq_persons_issuer_subject", "issuer", "subject", unique=True),
)

group_entitlements = Table(
    "group_entitlements",
    metadata,
    Column("group_name", String(200), primary_key=True),
    Column("actions", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("sponsor_id", String(40), ForeignKey("persons.id"), nullable=False, index=True),
    Column("owner_team", String(200), nullable=False),
    Column("scope_approver_id", String(40), ForeignKey("persons.id")),
    Column("purpose", Text, nullable=False),
    Column("mode", String(20), nullable=False),
    Column("ceiling", JSON, nullable=False),
    Column("jwks", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("review_due", Date, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime),
)

delegations = Table(
    "delegations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("person_id", String(40), ForeignKey("persons.id"), nullable=False, index=True),
    Column("agent_id", String(40), ForeignKey("agents.id"), nullable=False, index=True),
    Column("actions", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("admin_asserted", Integer, nullable=False, default=0),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("person_id", String(40), ForeignKey("persons.id"), nullable=False),
    Column("role", String(20), nullable=False),
    Column("label", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

#: Tasks are the token service's; the foundation owns the table because deprovisioning
#: ends a person's open tasks.
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("agent_id", String(40), ForeignKey("agents.id"), nullable=False, index=True),
    Column("person_id", String(40), ForeignKey("persons.id"), nullable=False, index=True),
    Column("delegation_id", String(40)),
    Column("purpose", Text, nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("audience", String(500), nullable=False),
    Column("actors", JSON, nullable=False),
    Column("constraints", JSON),
    Column("status", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String(200)),
)

#: The sequenced revocation table (architecture §4): processes read it from a watermark.
revocations = Table(
    "revocations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("subject_id", String(200), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Index("ix_revocations_kind_subject", "kind", "subject_id"),
)
