"""The console's server-side sessions: only a hash of the session secret is stored."""

from sqlalchemy import Column, String, Table

from tether.store.schema._meta import UTCDateTime, metadata

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("person_id", String(40), nullable=False, index=True),
    Column("role", String(20), nullable=False),
    Column("token_id", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
)
