"""contacts.region (大区) derived from the province; import outcomes: merged, blank, failure

Revision ID: 0015
Revises: 0012
Create Date: 2026-12-01 03:30:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0015"
down_revision = "0012"
branch_labels = None
depends_on = None

# The provinces of each region as the portal stored them when this revision was written
# (portal.audience.normalise.PROVINCES), copied so that the revision never changes with the code.
REGIONS = {
    "华北": ("北京市", "天津市", "河北省", "山西省", "内蒙古自治区"),
    "东北": ("辽宁省", "吉林省", "黑龙江省"),
    "华东": ("上海市", "江苏省", "浙江省", "安徽省", "福建省", "江西省", "山东省"),
    "华中": ("河南省", "湖北省", "湖南省"),
    "华南": ("广东省", "广西壮族自治区", "海南省"),
    "西南": ("重庆市", "四川省", "贵州省", "云南省", "西藏自治区"),
    "西北": ("陕西省", "甘肃省", "青海省", "宁夏回族自治区", "新疆维吾尔自治区"),
    "港澳台/海外": ("香港特别行政区", "澳门特别行政区", "台湾省"),
}


def upgrade():
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region", sa.String(length=16), nullable=False, server_default=""))
        batch_op.create_index("ix_contacts_region", ["region"], unique=False)
    with op.batch_alter_table("audience_imports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("merged", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("blank", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("failure", sa.String(length=32), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("failure_row", sa.Integer(), nullable=True))
    contacts = sa.table("contacts", sa.column("province", sa.String()), sa.column("region", sa.String()))
    for region, provinces in REGIONS.items():
        op.execute(contacts.update().where(contacts.c.province.in_(provinces)).values(region=region))


def downgrade():
    with op.batch_alter_table("audience_imports", schema=None) as batch_op:
        batch_op.drop_column("failure_row")
        batch_op.drop_column("failure")
        batch_op.drop_column("blank")
        batch_op.drop_column("merged")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_region")
        batch_op.drop_column("region")
