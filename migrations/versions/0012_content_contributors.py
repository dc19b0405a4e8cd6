"""content version contributors

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 03:20:00

"""

import sqlalchemy as sa
from alembic import op

import portal.models_base

# revision identifiers, used by Alembic.
revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "content_version_contributors",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("first_saved_at", portal.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["content_versions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "user_id"),
    )
    with op.batch_alter_table("content_version_contributors", schema=None) as batch_op:
        batch_op.create_index("ix_content_version_contributors_user_id", ["user_id"], unique=False)
    # Until now only the author was known to have written a version.
    op.execute(
        "INSERT INTO content_version_contributors (version_id, user_id, first_saved_at) "
        "SELECT id, author_id, created_at FROM content_versions WHERE author_id IS NOT NULL"
    )


def downgrade():
    with op.batch_alter_table("content_version_contributors", schema=None) as batch_op:
        batch_op.drop_index("ix_content_version_contributors_user_id")
    op.drop_table("content_version_contributors")
