"""documents: translations of the title, summary and key points, by language tag

Revision ID: 0004_document_translations
Revises: 0003_exempt_language
"""
from alembic import op
import sqlalchemy as sa


revision = "0004_document_translations"
down_revision = "0003_exempt_language"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("translations", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("documents", "translations")  # plain DROP COLUMN: a batch copy cannot drop a table others point at
