"""members: exempt from Party work (miễn sinh hoạt) and the language they read

Revision ID: 0003_exempt_language
Revises: 0002_document_note
"""
from alembic import op
import sqlalchemy as sa


revision = "0003_exempt_language"
down_revision = "0002_document_note"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("exempt", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=False, server_default="vi"))


def downgrade() -> None:
    op.drop_column("members", "language")  # plain DROP COLUMN: a batch copy cannot drop a table others point at
    op.drop_column("members", "exempt")
