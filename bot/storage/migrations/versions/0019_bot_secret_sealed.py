"""zalo_bots.webhook_secret as text: it is stored encrypted under the token key, as the bot's token is (a
copy of the database alone must not let anyone post updates as a branch bot's members)

Revision ID: 0019_bot_secret_sealed
Revises: 0018_oa_followed_at
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_bot_secret_sealed"
down_revision = "0018_oa_followed_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("zalo_bots") as batch_op:
        batch_op.alter_column("webhook_secret", type_=sa.Text(), existing_type=sa.String(length=64),
                              existing_nullable=False)


def downgrade() -> None:
    # secrets sealed since cannot be shortened: rotate the bots after a downgrade
    with op.batch_alter_table("zalo_bots") as batch_op:
        batch_op.alter_column("webhook_secret", type_=sa.String(length=64), existing_type=sa.Text(),
                              existing_nullable=False)
