"""audit checkpoints, signing key and erasable content

Revision ID: 0003_audit_more
Revises: 0002_audit
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta  # noqa: F401

revision: str = "0003_audit_more"
down_revision: str | None = "0002_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("chain_id", sa.String(length=40), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("kid", sa.String(length=40), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_keys",
        sa.Column("kid", sa.String(length=40), nullable=False),
        sa.Column("chain_id", sa.String(length=40), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("sealed_private", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_audit_keys")),
    )
    op.create_table(
        "audit_content",
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("erased_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_content")),
    )


def downgrade() -> None:
    op.drop_table("audit_content")
    op.drop_table("audit_keys")
    op.drop_table("audit_checkpoints")
