"""Marketing content: assets, their versions, review comments, and the checks' word and link lists."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class AssetKind(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WECOM = "wecom"


class VersionStatus(enum.StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    # A reviewer requested changes: the version is frozen as reviewed, and the author's
    # edits go into a new version, so the next review sees what changed.
    RETURNED = "returned"
    APPROVED = "approved"
    # A newer version was approved; kept for history and for campaigns still using it.
    SUPERSEDED = "superseded"


class Asset(db.Model):
    __tablename__ = "content_assets"
    __table_args__ = (Index("ix_content_assets_kind_updated", "kind", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[AssetVersion]] = relationship(
        back_populates="asset", order_by="AssetVersion.number", lazy="selectin"
    )
    owner = relationship("User", lazy="joined")

    @property
    def latest(self) -> AssetVersion:
        return self.versions[-1]

    @property
    def approved(self) -> AssetVersion | None:
        approved = [v for v in self.versions if v.status == VersionStatus.APPROVED]
        return approved[-1] if approved else None


class AssetVersion(db.Model):
    __tablename__ = "content_versions"
    __table_args__ = (UniqueConstraint("asset_id", "number"), Index("ix_content_versions_status", "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("content_assets.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=VersionStatus.DRAFT)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # email
    subject: Mapped[str] = mapped_column(String(300), default="")
    preheader: Mapped[str] = mapped_column(String(300), default="")
    html_body: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str] = mapped_column(Text, default="")
    text_written_by_hand: Mapped[bool] = mapped_column(Boolean, default=False)
    # The block editor's document (portal.content.blocks); None: the HTML is written by hand.
    blocks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # sms
    sms_text: Mapped[str] = mapped_column(Text, default="")
    # wecom group robot: "text" or "markdown"
    wecom_format: Mapped[str] = mapped_column(String(16), default="text")
    wecom_text: Mapped[str] = mapped_column(Text, default="")
    # The automatic checks as they stood at submission (list of Finding dicts).
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    asset: Mapped[Asset] = relationship(back_populates="versions")
    author = relationship("User", foreign_keys=[author_id], lazy="joined")
    decided_by = relationship("User", foreign_keys=[decided_by_id], lazy="joined")
    comments: Mapped[list[ReviewComment]] = relationship(order_by="ReviewComment.id", lazy="selectin")
    contributors: Mapped[list[VersionContributor]] = relationship(
        order_by="VersionContributor.first_saved_at", lazy="selectin", cascade="all, delete-orphan"
    )

    @property
    def editable(self) -> bool:
        return self.status == VersionStatus.DRAFT

    def fields(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "preheader": self.preheader,
            "html_body": self.html_body,
            "text_body": self.text_body,
            "sms_text": self.sms_text,
            "wecom_text": self.wecom_text,
        }


class VersionContributor(db.Model):
    """Someone who wrote part of a version: who created it, saved a change to it, or wrote the
    unapproved version it continues. None of them may approve it."""

    __tablename__ = "content_version_contributors"

    version_id: Mapped[int] = mapped_column(ForeignKey("content_versions.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    first_saved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user = relationship("User", lazy="joined")


class ReviewComment(db.Model):
    """The review thread of a version: comments and the decisions, in order."""

    __tablename__ = "content_review_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("content_versions.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # comment | submitted | approved | changes_requested | withdrawn
    kind: Mapped[str] = mapped_column(String(24), default="comment")
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    author = relationship("User", lazy="joined")


class ForbiddenWord(db.Model):
    __tablename__ = "content_forbidden_words"

    id: Mapped[int] = mapped_column(primary_key=True)
    word: Mapped[str] = mapped_column(String(100), unique=True)
    severity: Mapped[str] = mapped_column(String(16), default="blocking")
    note: Mapped[str] = mapped_column(String(200), default="")


class LinkRule(db.Model):
    __tablename__ = "content_link_rules"
    __table_args__ = (UniqueConstraint("kind", "domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # deny | allow | shortener
    domain: Mapped[str] = mapped_column(String(200))


class MediaImage(db.Model):
    """An image in the media library. Its file (and thumbnail) are in storage under a name made
    from the content's hash, so its public URL can be cached for ever."""

    __tablename__ = "content_media"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_name: Mapped[str] = mapped_column(String(80), unique=True)  # <sha256>.<ext>
    thumbnail_name: Mapped[str] = mapped_column(String(80))
    original_name: Mapped[str] = mapped_column(String(255), default="")
    folder: Mapped[str] = mapped_column(String(100), default="", index=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    content_type: Mapped[str] = mapped_column(String(40))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    uploaded_by = relationship("User", lazy="joined")


class ContentTemplate(db.Model):
    """A message to start from, saved by a person (the portal's own templates are in code)."""

    __tablename__ = "content_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    created_by = relationship("User", lazy="joined")
