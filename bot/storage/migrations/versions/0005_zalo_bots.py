"""zalo_bots: one Zalo bot per unit; chat_accounts.bot_id: the bot a Zalo account talks to

Revision ID: 0005_zalo_bots
Revises: 0002_web_links
Create Date: 2026-11-30 01:30:00
"""
from alembic import op
import sqlalchemy as sa

import bot.storage.models


revision = '0005_zalo_bots'
down_revision = '0002_web_links'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('zalo_bots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('zalo_id', sa.String(length=32), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('token', sa.Text(), nullable=False),
    sa.Column('webhook_secret', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('share_link', sa.String(length=255), nullable=True),
    sa.Column('created_at', bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column('rotated_at', bot.storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['unit_id'], ['units.id'], name=op.f('fk_zalo_bots_unit_id_units')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_zalo_bots')),
    sa.UniqueConstraint('unit_id', name=op.f('uq_zalo_bots_unit_id')),
    sa.UniqueConstraint('zalo_id', name=op.f('uq_zalo_bots_zalo_id'))
    )
    with op.batch_alter_table('chat_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bot_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_chat_accounts_bot_id'), ['bot_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_chat_accounts_bot_id_zalo_bots'), 'zalo_bots', ['bot_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('chat_accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_chat_accounts_bot_id_zalo_bots'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_chat_accounts_bot_id'))
        batch_op.drop_column('bot_id')
    op.drop_table('zalo_bots')
