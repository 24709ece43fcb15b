"""Tables of the token service: signing keys and the client-assertion replay table.

Tasks and revocations live in `identity.py` (the foundation owns them because
deprovisioning ends tasks); this context writes them through `tether.store.tokens`.
"""

from sqlalchemy import JSON, Column, Index, LargeBinary, String, Table

from tether.store.schema._meta import UTCDateTime, metadata

#: Ed25519 signing keys; the private part sealed under the master key (AAD = kid).
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(16), nullable=False),
    Column("public_jwk", JSON, nullable=False),
    Column("private_sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    #: set when a newer key takes over signing
    Column("retired_at", UTCDateTime),
    #: the key leaves the JWKS after this (retired_at + longest token lifetime + skew)
    Column("publish_until", UTCDateTime),
)

#: `jti`s of client assertions already accepted (RFC 7523 §3 single use), kept until they expire.
assertion_jtis = Table(
    "assertion_jtis",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_assertion_jtis_expires_at", "expires_at"),
)
