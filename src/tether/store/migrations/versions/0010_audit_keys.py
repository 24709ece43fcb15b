"""the chain's lookup keys in a table of their own, written in batches behind the chain

An append to `audit_events` touched the leaf pages of four secondary indexes (task, agent, person,
type) besides the chain's own right edge: about half the pages each durable commit wrote. Those
indexes move to `audit_event_keys`, which the audit writer fills in batches (`tether.audit.keys`).

Revision ID: 0010_audit_keys
Revises: 0009_task_usage
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0010_audit_keys"
down_revision: str | None = "0009_task_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigInt = tether.store.schema._meta.BigInt
OLD = ("task_id", "agent_id", "person_id", "type")


def upgrade() -> None:
    op.create_table(
        "audit_event_keys",
        sa.Column("seq", BigInt, autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("agent_id", sa.String(length=40), nullable=True),
        sa.Column("person_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_event_keys")),
    )
    op.execute(
        "INSERT INTO audit_event_keys (seq, type, task_id, agent_id, person_id) "
        "SELECT seq, type, task_id, agent_id, person_id FROM audit_events ORDER BY seq"
    )
    for col in OLD:
        op.create_index(f"ix_audit_event_keys_{col}", "audit_event_keys", [col, "seq"], unique=False)
    for col in OLD:
        op.drop_index(f"ix_audit_events_{col}", table_name="audit_events")


def downgrade() -> None:
    for col in OLD:
        op.create_index(f"ix_audit_events_{col}", "audit_events", [col], unique=False)
    for col in OLD:
        op.drop_index(f"ix_audit_event_keys_{col}", table_name="audit_event_keys")
    op.drop_table("audit_event_keys")
