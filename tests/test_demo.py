"""The demo data `make run` loads: complete enough to show every area, safe to load again."""

from sqlalchemy import func, select

from portal.audience.models import Contact
from portal.campaigns.models import Campaign
from portal.campaigns.service import validate
from portal.delivery.models import Delivery
from portal.demo import load_demo_data
from portal.extensions import db


def test_demo_data_loads_twice_into_the_same_state(app_ctx):
    load_demo_data()
    counts = [db.session.scalar(select(func.count()).select_from(t)) for t in (Contact, Campaign, Delivery)]
    load_demo_data()
    assert [db.session.scalar(select(func.count()).select_from(t)) for t in (Contact, Campaign, Delivery)] == counts
    assert counts[0] >= 150 and counts[1] == 2 and counts[2] > 100
    nurture = db.session.scalar(select(Campaign).where(Campaign.name == "线索培育邮件序列"))
    assert validate(nurture.id) == []  # ready for its test send and publishing
    finished = db.session.scalar(select(Campaign).where(Campaign.name == "春季新品发布会邀请"))
    assert finished.status == "completed"
