"""End-to-end campaign sending: publish -> plan -> 2 worker processes -> Postfix smtp-sink.

A campaign of personalised, tracked emails (about 20 KB of HTML with 20 links, rendered in
the sandbox for each contact, click and open tracking, unsubscribe headers) is published
to BENCH_SEND_SIZES audiences (default 20000,100000) and sent by two `python -m jobs.worker`
processes. Prints name=value lines:

    send_<n>_msgs_per_s            end to end: from the tick that starts the campaign to the
                                   last message accepted by the sink
    send_<n>_plan_s                the planning tick (journeys + ledger INSERT ... SELECT)
    send_<n>_{render,mime,smtp,db}_us   time per message in the senders
    send_<n>_worker_peak_mb        highest peak RSS of a sender (work horse) process
    bare_smtplib_msgs_per_s_2proc  pre-built bytes, one connection per process, 2 processes,
                                   same sink, same run: the Python limit
    send_ratio_vs_bare             ours (largest audience) / bare
Goals: >= 1500 messages/s, ratio >= 0.6, < 300 MB per worker, flat as the audience grows.
"""

from __future__ import annotations

import os
import time

import pytest
from rq.registry import FinishedJobRegistry
from sqlalchemy import func, select, text

from jobs.schedule import PERIODIC_JOBS
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.benchmarks.conftest import report
from tests.benchmarks.test_smtp_bench import (
    SMTP_SINK,
    _sample_message,
    bare_worker,
    realistic_template,
    run_parallel,
    start_sink,
    wall_rate,
)

SIZES = [int(n) for n in os.environ.get("BENCH_SEND_SIZES", "20000,100000").split(",")]
WORKERS = 2
TICK_SECONDS = next(job.interval for job in PERIODIC_JOBS if job.job_name == "jobs.sending.run_campaigns")


def _template() -> str:
    return (
        realistic_template()
        .replace("{name}", '{{ contact.name | default("客户") }}')
        .replace("{unsubscribe}", "{{ unsubscribe_url }}")
    )


def _add_contacts(count: int) -> None:
    """`count` contacts with email consent, generated in the database."""
    first = (db.session.scalar(text("SELECT coalesce(max(id), 0) FROM contacts")) or 0) + 1
    db.session.execute(
        text(
            "INSERT INTO contacts (email, name, company, industry, province, city, company_size, attributes,"
            " score, lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed, suppression_reason,"
            " created_at, updated_at)"
            " SELECT 'c' || n || '@example.org', '客户' || n, '企业' || (n % 5000), '制造', '上海市', '上海', '50-199',"
            " '{}', 60, 'growing', false, '', false, '', now(), now()"
            " FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n"
        ),
        {"first": first, "last": first + count - 1},
    )
    db.session.execute(
        text(
            "INSERT INTO contact_consents (contact_id, channel, status, source, recorded_at)"
            " SELECT id, 'email', 'granted', 'bench', now() FROM contacts WHERE id >= :first"
        ),
        {"first": first},
    )
    db.session.commit()


def _send(app, count: int, version_id: int, owner) -> dict[str, float]:
    from jobs.sending import run_campaigns

    db.session.execute(text("TRUNCATE contacts, deliveries, campaign_journeys CASCADE"))
    db.session.commit()
    _add_contacts(count)
    segment = factories.segment_of()
    message = [{"kind": "message", "channel": "email", "content_version_id": version_id}]
    campaign_id = factories.scheduled_campaign(owner, segment, message, name=f"秋季新品 {count}")
    registry = FinishedJobRegistry("sending", connection=app.extensions["redis"])
    for job_id in registry.get_job_ids():
        registry.remove(job_id, delete_job=True)

    published_at = utcnow()
    started = time.perf_counter()
    run_campaigns()  # the publish tick: starts the campaign, plans it, starts the senders
    planned = time.perf_counter()
    last_tick = time.monotonic()
    while True:
        time.sleep(0.5)
        db.session.expire_all()
        status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        db.session.commit()
        if status == CampaignStatus.COMPLETED:
            break
        assert status == CampaignStatus.RUNNING, status
        if time.monotonic() - last_tick >= TICK_SECONDS:  # as often as the scheduler runs it
            run_campaigns()
            last_tick = time.monotonic()
    last_sent, sent = db.session.execute(
        select(func.max(Delivery.sent_at), func.count()).where(
            Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.SENT
        )
    ).one()
    assert sent == count
    # From the publish tick to the last message accepted (sent_at is written by the workers).
    elapsed = (last_sent - published_at).total_seconds()
    connection = app.extensions["redis"]
    results = [registry.job_class.fetch(i, connection=connection).return_value() for i in registry.get_job_ids()]
    results = [r for r in results if isinstance(r, dict) and r.get("sent")]
    messages = sum(r["sent"] for r in results) or 1
    return {
        "msgs_per_s": count / elapsed,
        "plan_s": planned - started,
        "render_us": 1e6 * sum(r["seconds_render"] for r in results) / messages,
        "mime_us": 1e6 * sum(r["seconds_mime"] for r in results) / messages,
        "smtp_us": 1e6 * sum(r["seconds_channel"] for r in results) / messages,
        "db_us": 1e6 * sum(r["seconds_database"] for r in results) / messages,
        "worker_peak_mb": max(r["peak_rss_mb"] for r in results),
        "sender_jobs": len(results),
    }


@pytest.fixture(scope="module")
def sink_port():
    if not os.path.exists(SMTP_SINK):
        pytest.skip("Postfix's smtp-sink not found (apt-get install postfix): send benchmark not run")
    sink, port = start_sink()
    yield port
    sink.terminate()
    sink.wait(timeout=10)


def test_campaign_send_end_to_end(app, app_ctx, make_user, start_worker, sink_port):
    settings = {
        "SMTP_URL": f"smtp://127.0.0.1:{sink_port}",
        "SENDER_JOB_SECONDS": "600",
        "SENDERS_PER_CAMPAIGN": str(WORKERS),
        "DELIVERY_BATCH_SIZE": os.environ.get("BENCH_SEND_BATCH", "1000"),
    }
    app.config.update({k: (v if k == "SMTP_URL" else int(v)) for k, v in settings.items()})
    people = factories.people(make_user)
    version = factories.approved_content(
        people["operations_specialist"],
        people["reviewer"],
        "秋季新品发布",
        {"subject": "{{ contact.name }}，秋季新品发布会邀请", "html_body": _template(), "text_body": "诚邀您参加"},
    )
    for _ in range(WORKERS):
        start_worker("sending", extra_env=settings)
    figures = {}
    for size in SIZES:
        figures[size] = _send(app, size, version, people["marketing_manager"])
        for name, value in figures[size].items():
            report(f"send_{size}_{name}", f"{value:.1f}" if isinstance(value, float) else value)

    message = _sample_message()
    report("message_bytes", len(message))
    total = 40_000
    results = run_parallel(bare_worker, WORKERS, (sink_port, total // WORKERS, message))
    bare = wall_rate([(r[0], r[1]) for r in results], total)
    report(f"bare_smtplib_msgs_per_s_{WORKERS}proc", f"{bare:.0f}")
    largest = figures[max(SIZES)]
    report("send_ratio_vs_bare", f"{largest['msgs_per_s'] / bare:.2f}")
    if len(SIZES) > 1:
        report("worker_peak_mb_growth", f"{largest['worker_peak_mb'] - figures[min(SIZES)]['worker_peak_mb']:.1f}")
    assert largest["worker_peak_mb"] < 300
