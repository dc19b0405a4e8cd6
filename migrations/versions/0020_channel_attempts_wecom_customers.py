"""delivery attempts history, WeCom customer contacts, mass-send tasks and robot notices

Revision ID: 0020
Revises: 0023
Create Date: 2026-12-01 06:30:00

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0020"
down_revision = "0023"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wecom_external_userid", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("wecom_owner_userid", sa.String(length=64), nullable=False, server_default=""))
        batch_op.create_index("ix_contacts_wecom_external_userid", ["wecom_external_userid"])

    op.create_table(
        "delivery_attempts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", BigId, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=32), nullable=False, server_default=""),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id", "id"])

    op.create_table(
        "wecom_tasks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step_id", sa.Integer(), sa.ForeignKey("campaign_steps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner_userid", sa.String(length=64), nullable=False),
        sa.Column("msgid", sa.String(length=128), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("done", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_wecom_tasks_open", "wecom_tasks", ["done", "created_at"])

    op.create_table(
        "robot_notices",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=500), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_robot_notices_status_due", "robot_notices", ["status", "due_at"])


def downgrade():
    op.drop_index("ix_robot_notices_status_due", table_name="robot_notices")
    op.drop_table("robot_notices")
    op.drop_index("ix_wecom_tasks_open", table_name="wecom_tasks")
    op.drop_table("wecom_tasks")
    op.drop_index("ix_delivery_attempts_delivery", table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_wecom_external_userid")
        batch_op.drop_column("wecom_owner_userid")
        batch_op.drop_column("wecom_external_userid")
