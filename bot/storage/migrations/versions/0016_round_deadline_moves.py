"""rounds.first_closes_at and rounds.deadline_moved_at: the deadline a round was opened with, and when it
was last moved, so that reminder slots of the new deadline that had passed by then are not caught up, and
the round form sent again after an extension still finds its round

Revision ID: 0016_round_deadline_moves
Revises: 0015_chat_pauses
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.storage.models

revision = "0016_round_deadline_moves"
down_revision = "0015_chat_pauses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("rounds", sa.Column("first_closes_at", bot.storage.models.UTCDateTime(), nullable=True))
    op.add_column("rounds", sa.Column("deadline_moved_at", bot.storage.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    # a plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later): a batch copy of ``rounds`` could not drop
    # the table that attempts, outbox rows and links point at
    op.drop_column("rounds", "deadline_moved_at")
    op.drop_column("rounds", "first_closes_at")
