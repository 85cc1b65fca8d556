"""web links: signed, expiring, revocable ways into the study pages

Revision ID: 0002_web_links
Revises: 0004_document_translations
"""
from alembic import op
import sqlalchemy as sa
import bot.storage.models


revision = '0002_web_links'
down_revision = '0004_document_translations'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_links',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=True),
    sa.Column('created_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_web_links_member_id_members')),
    sa.ForeignKeyConstraint(['round_id'], ['rounds.id'], name=op.f('fk_web_links_round_id_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_links'))
    )
    with op.batch_alter_table('web_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_links_member_id'), ['member_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('web_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_links_member_id'))
    op.drop_table('web_links')
