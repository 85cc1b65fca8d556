"""chat_states.pauses: an unlinked chat's pauses in a row, each twice as long as the last, so that wrong
codes or a stranger's messages cannot spend a Zalo bot's monthly messages

Revision ID: 0015_chat_pauses
Revises: 0014_outbox_parts_sent
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_chat_pauses"
down_revision = "0014_outbox_parts_sent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chat_states", sa.Column("pauses", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chat_states", schema=None) as batch_op:
        batch_op.drop_column("pauses")
