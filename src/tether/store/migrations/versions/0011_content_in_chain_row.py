"""the sealed content of an event in the event's own row, outside its hashed body

The erasable content (prompt text, redacted arguments, decision input; AES-GCM sealed, the event id
as associated data) had a table of its own, `audit_content`, keyed by event id: each call's durable
commit wrote that table's page and its key index's besides the chain's. It now lives in two nullable
columns of `audit_events` — `content` and `content_erased_at` — reached by the event id's unique
index the chain already has. The hash covers `body` only, so content is still erased (set to NULL)
without touching the chain.

Revision ID: 0011_content_in_chain_row
Revises: 0010_audit_keys
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_content_in_chain_row"
down_revision: str | None = "0010_audit_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # content naming no event (only `store_content` with an unknown id could leave such a row) is not kept
    orphans = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM audit_content WHERE event_id NOT IN (SELECT id FROM audit_events)"))
        .scalar()
    )
    if orphans:
        logging.getLogger("alembic.runtime.migration").warning(
            "0011: %d content row(s) name no event and are not kept", orphans
        )
    op.add_column("audit_events", sa.Column("content", sa.LargeBinary(), nullable=True))
    op.add_column("audit_events", sa.Column("content_erased_at", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE audit_events SET "
        "content = (SELECT c.blob FROM audit_content c WHERE c.event_id = audit_events.id), "
        "content_erased_at = (SELECT c.erased_at FROM audit_content c WHERE c.event_id = audit_events.id) "
        "WHERE id IN (SELECT event_id FROM audit_content)"
    )
    op.drop_table("audit_content")


def downgrade() -> None:
    op.create_table(
        "audit_content",
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("erased_at", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_audit_content")),
    )
    op.execute(
        "INSERT INTO audit_content (event_id, blob, erased_at) SELECT id, content, content_erased_at "
        "FROM audit_events WHERE content IS NOT NULL OR content_erased_at IS NOT NULL"
    )
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("content_erased_at")
        batch.drop_column("content")
