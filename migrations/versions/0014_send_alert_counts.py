"""send alert counts, job run interruptions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 03:10:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "campaign_send_counts",
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("settled", BigId, nullable=False, server_default="0"),
        sa.Column("sent", BigId, nullable=False, server_default="0"),
        sa.Column("bounced", BigId, nullable=False, server_default="0"),
        sa.Column("resumed_settled", BigId, nullable=False, server_default="0"),
        sa.Column("resumed_sent", BigId, nullable=False, server_default="0"),
        sa.Column("resumed_bounced", BigId, nullable=False, server_default="0"),
        sa.Column("window_settled", BigId, nullable=False, server_default="0"),
        sa.Column("window_sent", BigId, nullable=False, server_default="0"),
        sa.Column("window_bounced", BigId, nullable=False, server_default="0"),
        sa.Column("segment_settled", BigId, nullable=False, server_default="0"),
        sa.Column("segment_sent", BigId, nullable=False, server_default="0"),
        sa.Column("segment_bounced", BigId, nullable=False, server_default="0"),
        sa.Column("max_bounce_rate", sa.Float(), nullable=True),
        sa.Column("min_delivery_rate", sa.Float(), nullable=True),
        sa.Column("limits_reason", sa.Text(), nullable=False, server_default=""),
    )
    # The counts of campaigns that already sent, from their ledger, so that their alerts go on.
    op.execute(
        """
        INSERT INTO campaign_send_counts (campaign_id, settled, sent, bounced)
        SELECT campaign_id,
               count(*),
               sum(CASE WHEN status = 'sent' THEN 1 ELSE 0 END),
               sum(CASE WHEN status = 'bounced' THEN 1 ELSE 0 END)
          FROM deliveries
         WHERE status IN ('sent', 'bounced', 'failed')
         GROUP BY campaign_id
        """
    )
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.add_column(sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0"))


def downgrade():
    with op.batch_alter_table("job_runs") as batch_op:
        batch_op.drop_column("interruptions")
    op.drop_table("campaign_send_counts")
