"""content blocks, media library, saved templates

Revision ID: 0018
Revises: 0015
Create Date: 2026-12-01 04:00:00

"""

import sqlalchemy as sa
from alembic import op

import portal.models_base

# revision identifiers, used by Alembic.
revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("content_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("blocks", sa.JSON(), nullable=True))
    op.create_table(
        "content_media",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=80), nullable=False),
        sa.Column("thumbnail_name", sa.String(length=80), nullable=False),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("folder", sa.String(length=100), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("uploaded_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", portal.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["uploaded_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("file_name"),
    )
    with op.batch_alter_table("content_media", schema=None) as batch_op:
        batch_op.create_index("ix_content_media_folder", ["folder"], unique=False)
    op.create_table(
        "content_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", portal.models_base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("content_templates")
    with op.batch_alter_table("content_media", schema=None) as batch_op:
        batch_op.drop_index("ix_content_media_folder")
    op.drop_table("content_media")
    with op.batch_alter_table("content_versions", schema=None) as batch_op:
        batch_op.drop_column("blocks")
