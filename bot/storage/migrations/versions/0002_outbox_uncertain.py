"""outbox: messages a stopped sender left in flight are 'uncertain', no longer 'sent'

Before this revision such rows were marked ``sent`` with an error starting ``uncertain:``; they
become ``uncertain`` (their ``sent_at`` was the restart time, not a delivery: cleared), so that
secretaries see them in /chualam.

Revision ID: 0002_outbox_uncertain
Revises: 0001
Create Date: 2026-11-30 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_outbox_uncertain'
down_revision = '0001'
branch_labels = None
depends_on = None

outbox = sa.table('outbox', sa.column('status', sa.String), sa.column('error', sa.Text),
                  sa.column('sent_at', sa.DateTime), sa.column('claimed_at', sa.DateTime))


def upgrade() -> None:
    op.execute(outbox.update()
               .where(outbox.c.status == 'sent', outbox.c.error.like('uncertain:%'))
               .values(status='uncertain', sent_at=None))


def downgrade() -> None:
    op.execute(outbox.update().where(outbox.c.status == 'uncertain')
               .values(status='sent', sent_at=outbox.c.claimed_at,
                       error='uncertain: the sender stopped during the request'))
