"""Read the messages the development SMTP sink stored (one .eml file each)."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class OutboxMessage:
    key: str
    received_at: datetime
    subject: str
    sender: str
    recipients: list[str]
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None
    html: str | None = None


def _parse(path: Path, with_bodies: bool) -> OutboxMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    envelope_to = message.get_all("X-Envelope-To") or []
    parsed = OutboxMessage(
        key=path.stem,
        received_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
        subject=str(message.get("Subject", "")),
        sender=str(message.get("From", "")),
        recipients=[str(r) for r in envelope_to] or [str(message.get("To", ""))],
        headers=[(k, str(v)) for k, v in message.items()],
    )
    if with_bodies:
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        parsed.text = text_part.get_content() if text_part is not None else None
        parsed.html = html_part.get_content() if html_part is not None else None
    return parsed


def list_messages(directory: str, limit: int = 200) -> list[OutboxMessage]:
    """Newest first."""
    files = sorted(Path(directory).glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [_parse(path, with_bodies=False) for path in files[:limit]]


def get_message(directory: str, key: str) -> OutboxMessage | None:
    if not key.replace("-", "").isalnum():  # keys are ours: never let a path through
        return None
    path = Path(directory) / f"{key}.eml"
    return _parse(path, with_bodies=True) if path.is_file() else None
