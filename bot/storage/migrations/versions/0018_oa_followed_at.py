"""zalo_oa_contacts.followed_at: when the member last followed the OA, so that a follow and an unfollow
delivered out of order leave the later one in force, whichever comes last

Revision ID: 0018_oa_followed_at
Revises: 0017_link_code_replaces
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.storage.models

revision = "0018_oa_followed_at"
down_revision = "0017_link_code_replaces"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("zalo_oa_contacts", sa.Column("followed_at", bot.storage.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("zalo_oa_contacts", "followed_at")  # a plain DROP COLUMN, as 0016
