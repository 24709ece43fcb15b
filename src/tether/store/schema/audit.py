"""The audit chain table: one row per event, `seq` gap-free, `body` the exact hashed bytes."""

from sqlalchemy import Column, Index, LargeBinary, String, Table, Text

from tether.store.schema._meta import BigInt, metadata

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInt, primary_key=True, autoincrement=False),
    Column("id", String(40), nullable=False, unique=True),
    Column("ts", String(32), nullable=False),
    Column("type", String(64), nullable=False),
    Column("task_id", String(40)),
    Column("agent_id", String(40)),
    Column("person_id", String(40)),
    Column("body", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    #: the event's erasable content (prompt text, redacted arguments, decision input), AES-GCM sealed with the
    #: event id as associated data; outside `body`, so erasing it (NULL) leaves the chain intact
    Column("content", LargeBinary),
    Column("content_erased_at", String(32)),
)

#: The chain's lookup keys, kept a little behind it (`tether.audit.keys`): an append touches only the chain's
#: right edge, and the indexes by task, agent, person and type are written in batches, not with every call.
audit_event_keys = Table(
    "audit_event_keys",
    metadata,
    Column("seq", BigInt, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("task_id", String(40)),
    Column("agent_id", String(40)),
    Column("person_id", String(40)),
    Index("ix_audit_event_keys_task_id", "task_id", "seq"),
    Index("ix_audit_event_keys_agent_id", "agent_id", "seq"),
    Index("ix_audit_event_keys_person_id", "person_id", "seq"),
    Index("ix_audit_event_keys_type", "type", "seq"),
)

#: Signed checkpoints of the chain head: `jws` is EdDSA over RFC 8785 {chain_id, seq, hash, ts}.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInt, primary_key=True, autoincrement=False),
    Column("chain_id", String(40), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("ts", String(32), nullable=False),
    Column("kid", String(40), nullable=False),
    Column("jws", Text, nullable=False),
)

#: The audit signing key (one row): Ed25519 private key sealed under a master-derived key.
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("kid", String(40), primary_key=True),
    Column("chain_id", String(40), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("sealed_private", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
)


#: The server processes serving this database, with their last heartbeat. An allowed call without an
#: outcome is recovered ("unknown") only when the process that decided it is no longer alive.
server_instances = Table(
    "server_instances",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", BigInt, nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("heartbeat_at", String(32), nullable=False, index=True),
)
