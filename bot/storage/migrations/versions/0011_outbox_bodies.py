"""outbox: a broadcast's text stored once (``outbox_bodies``), rows keep only their own part;
an index on chat_accounts.member_id (an announcement to 100,000 members scanned the accounts once
per member)

Existing rows keep their whole message in ``payload`` and no body: they are sent as before.

Revision ID: 0011_outbox_bodies
Revises: 0010_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.storage.models

revision = "0011_outbox_bodies"
down_revision = "0010_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("outbox_bodies",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("created_at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_bodies")),
    sa.UniqueConstraint("digest", name=op.f("uq_outbox_bodies_digest")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_outbox_body_id_outbox_bodies"), "outbox_bodies", ["body_id"], ["id"])
    op.create_index("ix_chat_accounts_member_id", "chat_accounts", ["member_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_chat_accounts_member_id", table_name="chat_accounts")
    # rows that point at a body get their whole message back first
    outbox = sa.table("outbox", sa.column("id", sa.Integer), sa.column("payload", sa.JSON),
                      sa.column("body_id", sa.Integer))
    bodies = sa.table("outbox_bodies", sa.column("id", sa.Integer), sa.column("payload", sa.JSON))
    conn = op.get_bind()
    shared = dict(conn.execute(sa.select(bodies.c.id, bodies.c.payload)).all())
    for oid, own, body_id in conn.execute(sa.select(outbox.c.id, outbox.c.payload, outbox.c.body_id)
                                          .where(outbox.c.body_id.is_not(None))).all():
        conn.execute(outbox.update().where(outbox.c.id == oid).values(payload={**shared[body_id], **(own or {})}))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_outbox_body_id_outbox_bodies"), type_="foreignkey")
        batch_op.drop_column("body_id")
    op.drop_table("outbox_bodies")
