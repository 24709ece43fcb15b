"""gateway: MCP tool pins

Revision ID: 0008_gateway
Revises: 0007_credentials
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0008_gateway"
down_revision: str | None = "0007_credentials"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = tether.store.schema._meta.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "mcp_tool_pins",
        sa.Column("server", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=128), nullable=False),
        sa.Column("pin", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=False),
        sa.Column("approved_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("server", "tool", name=op.f("pk_mcp_tool_pins")),
    )


def downgrade() -> None:
    op.drop_table("mcp_tool_pins")
