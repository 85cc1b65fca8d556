"""inbox_updates: updates fetched by polling (or taken from a webhook answered at once) are kept until handled,
so that a process killed while handling them loses none

Revision ID: 0020_inbox_updates
Revises: 0019_bot_secret_sealed
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.storage.models

revision = "0020_inbox_updates"
down_revision = "0019_bot_secret_sealed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_updates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("update_key", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", bot.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_updates")),
        sa.UniqueConstraint("source", "update_key", name=op.f("uq_inbox_updates_source_update_key")),
    )
    op.create_index("ix_inbox_updates_received", "inbox_updates", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_updates_received", table_name="inbox_updates")
    op.drop_table("inbox_updates")
