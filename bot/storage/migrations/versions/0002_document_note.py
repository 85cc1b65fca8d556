"""documents: a note members see under the title (the period a document belongs to)

Revision ID: 0002_document_note
Revises: 0002_quiz_question_shown
"""
from alembic import op
import sqlalchemy as sa


revision = "0002_document_note"
down_revision = "0002_quiz_question_shown"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("documents", "note")  # plain DROP COLUMN: a batch copy cannot drop a table others point at
