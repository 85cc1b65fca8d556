"""outbox.parts_sent: how many parts of a long message (one sent as several platform messages)
reached the member before a failure, so that the retry sends only the rest, never the first parts twice

Revision ID: 0014_outbox_parts_sent
Revises: 0013_round_results
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_outbox_parts_sent"
down_revision = "0013_round_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("parts_sent", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("parts_sent")
