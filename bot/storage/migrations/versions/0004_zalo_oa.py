"""Zalo Official Account: OAuth state, contacts (windows), what each outbox message cost

Revision ID: 0004_zalo_oa
Revises: 0002_outbox_uncertain
"""
from alembic import op
import sqlalchemy as sa
import bot.storage.models


revision = '0004_zalo_oa'
down_revision = '0002_outbox_uncertain'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('zalo_oa_auth',
    sa.Column('key', sa.String(length=16), nullable=False),
    sa.Column('access_token', sa.Text(), nullable=True),
    sa.Column('refresh_token', sa.Text(), nullable=True),
    sa.Column('expires_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('refresh_expires_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('code_verifier', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=64), nullable=True),
    sa.Column('requested_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('lost_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('lost_reason', sa.Text(), nullable=True),
    sa.Column('updated_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_zalo_oa_auth'))
    )
    op.create_table('zalo_oa_contacts',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('following', sa.Boolean(), nullable=False),
    sa.Column('last_interaction_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('unfollowed_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.Column('updated_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_zalo_oa_contacts'))
    )
    op.create_table('zalo_oa_sends',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('rung', sa.String(length=16), nullable=False),
    sa.Column('cost', sa.Integer(), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('sent_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_zalo_oa_sends'))
    )
    op.create_index(op.f('ix_zalo_oa_sends_month'), 'zalo_oa_sends', ['month'], unique=False)
    op.create_index(op.f('ix_zalo_oa_sends_outbox_id'), 'zalo_oa_sends', ['outbox_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_zalo_oa_sends_outbox_id'), table_name='zalo_oa_sends')
    op.drop_index(op.f('ix_zalo_oa_sends_month'), table_name='zalo_oa_sends')
    op.drop_table('zalo_oa_sends')
    op.drop_table('zalo_oa_contacts')
    op.drop_table('zalo_oa_auth')
