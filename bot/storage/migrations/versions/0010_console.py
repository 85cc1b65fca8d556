"""Web console: one-time login links, sessions and the audit log.

Revision ID: 0010_console
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.storage.models

revision = "0010_console"
down_revision = "0005_zalo_bots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("console_logins",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("member_id", sa.Integer(), nullable=False),
    sa.Column("created_at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column("expires_at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column("used_at", bot.storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_console_logins_member_id_members")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_console_logins")),
    sa.UniqueConstraint("token_hash", name=op.f("uq_console_logins_token_hash")),
    )
    op.create_table("console_sessions",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("token_hash", sa.String(length=64), nullable=False),
    sa.Column("member_id", sa.Integer(), nullable=False),
    sa.Column("csrf", sa.String(length=64), nullable=False),
    sa.Column("created_at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column("last_seen_at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.Column("ended_at", bot.storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_console_sessions_member_id_members")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    sa.UniqueConstraint("token_hash", name=op.f("uq_console_sessions_token_hash")),
    )
    op.create_table("console_audit",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("member_id", sa.Integer(), nullable=True),
    sa.Column("action", sa.String(length=32), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("source", sa.String(length=64), nullable=False),
    sa.Column("at", bot.storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_console_audit_member_id_members")),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_console_audit")),
    )
    op.create_index(op.f("ix_console_audit_at"), "console_audit", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_console_audit_at"), table_name="console_audit")
    op.drop_table("console_audit")
    op.drop_table("console_sessions")
    op.drop_table("console_logins")
