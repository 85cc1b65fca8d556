"""chat_states remember the quiz question last sent to a chat and when it was delivered

Revision ID: 0002_quiz_question_shown
Revises: 0004_zalo_oa
"""
from alembic import op
import sqlalchemy as sa
import bot.storage.models


revision = '0002_quiz_question_shown'
down_revision = '0004_zalo_oa'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('chat_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('question_attempt_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('question_position', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('question_delivered_at', bot.storage.models.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('chat_states', schema=None) as batch_op:
        batch_op.drop_column('question_delivered_at')
        batch_op.drop_column('question_position')
        batch_op.drop_column('question_attempt_id')
