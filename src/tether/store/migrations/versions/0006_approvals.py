"""approvals, break-glass, webhook deliveries, console sessions

Revision ID: 0006_approvals
Revises: 0005_policy
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tether.store.schema._meta

revision: str = "0006_approvals"
down_revision: str | None = "0005_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = tether.store.schema._meta.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("person_id", sa.String(length=40), nullable=False),
        sa.Column("sponsor_id", sa.String(length=40), nullable=False),
        sa.Column("actors", sa.JSON(), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=120), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("prompt_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("gateway", sa.String(length=20), nullable=False),
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("policy_ids", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("forbid_ids", sa.JSON(), nullable=False),
        sa.Column("approver_rule", sa.String(length=120), nullable=False),
        sa.Column("bundle", sa.String(length=120), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.Column("decided_at", UTC(), nullable=True),
        sa.Column("decided_by", sa.String(length=40), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("used_at", UTC(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index("ix_approvals_agent_id", "approvals", ["agent_id"])
    op.create_index("ix_approvals_person_id", "approvals", ["person_id"])
    op.create_index("ix_approvals_task_id", "approvals", ["task_id"])
    op.create_index("ix_approvals_status_created", "approvals", ["status", "created_at"])
    op.create_table(
        "breakglass",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("invoked_by", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=True),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.Column("ended_at", UTC(), nullable=True),
        sa.Column("ended_by", sa.String(length=40), nullable=True),
        sa.Column("review_status", sa.String(length=20), nullable=False),
        sa.Column("reviewed_by", sa.String(length=40), nullable=True),
        sa.Column("reviewed_at", UTC(), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breakglass")),
    )
    op.create_index("ix_breakglass_agent_id", "breakglass", ["agent_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("format", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_subject_id", "webhook_deliveries", ["subject_id"])
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("person_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("last_seen_at", UTC(), nullable=False),
        sa.Column("expires_at", UTC(), nullable=False),
        sa.Column("ended_at", UTC(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_console_sessions_secret_hash")),
    )
    op.create_index("ix_console_sessions_person_id", "console_sessions", ["person_id"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    op.drop_table("webhook_deliveries")
    op.drop_table("breakglass")
    op.drop_table("approvals")
