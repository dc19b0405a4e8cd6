"""campaign send window: the days of the week it opens on

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-01 06:30:00

The send window was two times of day; a campaign may now send on some days of the week only
("12345": Monday to Friday). Existing campaigns keep sending every day.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0023"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("window_days", sa.String(length=7), nullable=False, server_default="1234567"))


def downgrade():
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("window_days")
