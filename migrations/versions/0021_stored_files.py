"""stored files: the files one host writes and another reads, kept in the database in chunks

Revision ID: 0021
Revises: 0019
Create Date: 2026-12-08 10:00:00

Report files, exports, import uploads and media-library images move from a local folder to
rows every host can read (STORAGE_BACKEND=database, the default). Files already in
STORAGE_DIR are not moved: they stay readable with STORAGE_BACKEND=folder.
"""
from alembic import op
import sqlalchemy as sa

import portal.models_base


# revision identifiers, used by Alembic.
revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "stored_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("area", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", portal.models_base.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("area", "name", name="uq_stored_files_area_name"),
    )
    op.create_table(
        "stored_file_chunks",
        sa.Column(
            "file_id", sa.Integer(), sa.ForeignKey("stored_files.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade():
    op.drop_table("stored_file_chunks")
    op.drop_table("stored_files")
