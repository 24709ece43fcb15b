"""token service: signing keys, client-assertion replay table, NOTIFY on revocations

Revision ID: 0004_tokens
Revises: 0003_audit_more
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0004_tokens"
down_revision: str | None = "0003_audit_more"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = tether.store.schema._meta.UTCDateTime

#: PostgreSQL only: every inserted revocation wakes the watchers of every process (they then
#: read the table from their watermark; the payload is only the seq).
NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION tether_revocation_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('tether_revocations', NEW.seq::text);
  RETURN NEW;
END
$$ LANGUAGE plpgsql
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER tether_revocations_notify AFTER INSERT ON revocations
FOR EACH ROW EXECUTE FUNCTION tether_revocation_notify()
"""


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("retired_at", UTC(), nullable=True),
        sa.Column("publish_until", UTC(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "assertion_jtis",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=256), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_assertion_jtis")),
    )
    op.create_index("ix_assertion_jtis_expires_at", "assertion_jtis", ["expires_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tether_revocations_notify ON revocations")
        op.execute("DROP FUNCTION IF EXISTS tether_revocation_notify()")
    op.drop_index("ix_assertion_jtis_expires_at", table_name="assertion_jtis")
    op.drop_table("assertion_jtis")
    op.drop_table("signing_keys")
