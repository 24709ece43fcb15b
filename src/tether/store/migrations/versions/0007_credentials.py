"""credential vault: sealed upstream credentials and per-task subject tokens

Revision ID: 0007_credentials
Revises: 0006_approvals
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0007_credentials"
down_revision: str | None = "0006_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = tether.store.schema._meta.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_kid", sa.String(length=32), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("name", name=op.f("uq_credentials_name")),
    )
    op.create_table(
        "credential_subject_tokens",
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("person_id", sa.String(length=40), nullable=False),
        sa.Column("token_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("data_key_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_kid", sa.String(length=32), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_credential_subject_tokens")),
    )


def downgrade() -> None:
    op.drop_table("credential_subject_tokens")
    op.drop_table("credentials")
