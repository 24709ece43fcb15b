"""Tables of the credential vault: upstream credentials and per-task subject tokens, both sealed.

Envelope encryption: each row has its own random data key, which seals the secret
(AES-256-GCM, aad = row id); the data key itself is sealed under the master key
(`data_key_wrapped`, aad = row id). Rotating the master key re-wraps data keys only.
"""

from sqlalchemy import JSON, Column, LargeBinary, String, Table

from tether.store.schema._meta import UTCDateTime, metadata

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    #: bearer | api_key | client_credentials | obo
    Column("kind", String(32), nullable=False),
    #: non-secret settings (header name, token URL, client id, scope, app_only)
    Column("config", JSON, nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("data_key_wrapped", LargeBinary, nullable=False),
    #: fingerprint of the master key that wraps the data key (never the key)
    Column("master_kid", String(32), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The person's subject token for a task (on-behalf-of), destroyed when the task ends.
subject_tokens = Table(
    "credential_subject_tokens",
    metadata,
    Column("task_id", String(40), primary_key=True),
    Column("person_id", String(40), nullable=False),
    Column("token_sealed", LargeBinary, nullable=False),
    Column("data_key_wrapped", LargeBinary, nullable=False),
    Column("master_kid", String(32), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
