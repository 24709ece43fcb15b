"""Policy keeps no tables: bundles live in files (policy as code) and decisions in the audit chain.

Revision ID: 0005_policy
Revises: 0004_tokens
"""

from collections.abc import Sequence

revision: str = "0005_policy"
down_revision: str | None = "0004_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
