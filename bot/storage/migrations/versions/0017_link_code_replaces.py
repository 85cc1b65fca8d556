"""link_codes.replaces_link: a code made for one member on purpose (a lost phone, a new account), the only kind
that moves a member already linked to the chat that uses it; codes of invitation sheets never do

Revision ID: 0017_link_code_replaces
Revises: 0016_round_deadline_moves
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_link_code_replaces"
down_revision = "0016_round_deadline_moves"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("link_codes", sa.Column("replaces_link", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("link_codes", "replaces_link")  # a plain DROP COLUMN, as 0016
