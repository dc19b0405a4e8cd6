"""tracking intake: the mark of the last open or click written from the Redis stream

Revision ID: 0024
Revises: 0020
Create Date: 2026-12-01 10:00:00

Opens and clicks are appended to a Redis stream as they arrive and written here in batches;
this row says how far the stream has been written ("0-0": nothing yet).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0024"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "tracking_intake_mark",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_entry", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_intake_mark")),
    )
    op.bulk_insert(table, [{"id": 1, "last_entry": "0-0"}])


def downgrade():
    op.drop_table("tracking_intake_mark")
