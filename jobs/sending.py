"""Sending jobs. For now: test sends, through the real channel and the same message builder
the campaign sender will use."""

from __future__ import annotations

from flask import current_app

from jobs.tracking import tracked
from portal.extensions import db
from portal.models_base import utcnow


def send_test_messages(test_send_ids: list[int], job_run_id: int | None = None) -> dict[str, int]:
    """Render each test send's step as its contact (or the sample contact), mark the subject
    [TEST], and send it over one SMTP connection. Idempotent: sent rows are skipped."""
    from portal.audience.models import Contact
    from portal.campaigns.models import TestSend
    from portal.content.service import approved_version
    from portal.delivery.channels.smtp import SmtpSession
    from portal.delivery.mime import DkimSigner, MessageSkeleton, make_message_id
    from portal.delivery.render import CONTACT_FIELDS, contact_variables, sample_variables
    from portal.delivery.tokens import tracking_tokens

    config = current_app.config
    tokens = tracking_tokens(current_app)
    skeleton = MessageSkeleton(
        config["MAIL_FROM"], extra_headers={"X-Portal-Test": "yes"}, dkim=DkimSigner.from_config(config)
    )
    domain = skeleton.envelope_from.rsplit("@", 1)[1]
    outcome = {"sent": 0, "failed": 0}
    with tracked(job_run_id) as progress, SmtpSession.from_url(config["SMTP_URL"]) as smtp:
        rows = [db.session.get(TestSend, i) for i in test_send_ids]
        for number, row in enumerate(rows, start=1):
            if row is None or row.status == "sent":
                continue
            try:
                content = approved_version(row.content_version_id)
                variables = sample_variables()
                contact = db.session.get(Contact, row.contact_id) if row.contact_id else None
                if contact is not None:
                    variables["contact"] = contact_variables({k: getattr(contact, k) for k in CONTACT_FIELDS})
                unsubscribe_url = f"{config['PUBLIC_BASE_URL']}/u/{tokens.test_unsubscribe_token(row.id)}"
                variables["unsubscribe_url"] = unsubscribe_url
                subject = "[TEST] " + content.templates["subject"].render(variables)
                message = skeleton.build(
                    to_email=row.recipient,
                    subject=subject,
                    html=content.templates["html_body"].render(variables),
                    text=content.templates["text_body"].render(variables),
                    message_id=make_message_id(f"test-{row.id}", domain),
                    unsubscribe_url=unsubscribe_url,
                )
                result = smtp.send(skeleton.envelope_from, row.recipient, message)
                row.subject = subject[:400]
                row.status = "sent" if result.ok else "failed"
                row.message = "" if result.ok else f"{result.code} {result.message}"[:1000]
            except Exception as exc:
                row.status, row.message = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            row.sent_at = utcnow() if row.status == "sent" else None
            outcome[row.status] += 1
            db.session.commit()
            progress.update(100 * number // max(len(rows), 1), f"{outcome['sent']} sent, {outcome['failed']} failed")
    return outcome
