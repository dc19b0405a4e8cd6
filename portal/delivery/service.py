"""What the delivery pages read: a campaign's deliveries and one delivery with every attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from portal.audience.models import Contact
from portal.campaigns.models import Campaign
from portal.delivery.models import Delivery, DeliveryAttempt, DeliveryStatus
from portal.extensions import db

# Rows a campaign's delivery list shows, the newest first.
LIST_LIMIT = 200


class DeliveryError(Exception):
    """A refusal with a code and parameters; the page makes the sentence."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass
class DeliveryDetail:
    delivery: Delivery
    campaign: Campaign
    contact: Contact | None
    attempts: list[DeliveryAttempt]


def campaign_deliveries(campaign_id: int, status: str = "") -> tuple[Campaign, list[tuple[Delivery, Contact]]]:
    """The campaign and its latest deliveries (of `status` when one is given), with contacts."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise DeliveryError("no_campaign", campaign=campaign_id)
    query = (
        select(Delivery, Contact)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.campaign_id == campaign_id)
        .order_by(Delivery.id.desc())
        .limit(LIST_LIMIT)
    )
    if status in {s.value for s in DeliveryStatus}:
        query = query.where(Delivery.status == status)
    return campaign, [(row.Delivery, row.Contact) for row in db.session.execute(query)]


def delivery_detail(campaign_id: int, delivery_id: int) -> DeliveryDetail:
    """One delivery of the campaign with every attempt, oldest first."""
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None or delivery.campaign_id != campaign_id:
        raise DeliveryError("no_delivery", delivery=delivery_id)
    attempts = db.session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id)
    ).all()
    return DeliveryDetail(
        delivery=delivery,
        campaign=db.session.get(Campaign, campaign_id),  # type: ignore[arg-type]
        contact=db.session.get(Contact, delivery.contact_id),
        attempts=list(attempts),
    )
