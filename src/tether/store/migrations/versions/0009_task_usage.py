"""several server processes: per-task usage counters, server instances and their heartbeats

Revision ID: 0009_task_usage
Revises: 0008_gateway
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0009_task_usage"
down_revision: str | None = "0008_gateway"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = tether.store.schema._meta.BigInt


def upgrade() -> None:
    op.create_table(
        "task_usage",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("items", BigInt, nullable=False),
        sa.Column("bytes", BigInt, nullable=False),
        sa.Column("calls", BigInt, nullable=False),
        sa.Column("external_recipients", BigInt, nullable=False),
        sa.Column("updated_seq", BigInt, nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_usage")),
    )
    op.create_index(op.f("ix_task_usage_updated_seq"), "task_usage", ["updated_seq"])
    op.create_table(
        "server_instances",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", BigInt, nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_instances")),
    )
    op.create_index(op.f("ix_server_instances_heartbeat_at"), "server_instances", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_server_instances_heartbeat_at"), table_name="server_instances")
    op.drop_table("server_instances")
    op.drop_index(op.f("ix_task_usage_updated_seq"), table_name="task_usage")
    op.drop_table("task_usage")
