"""The PDF report of one campaign with 1,000,000 deliveries and ~300,000 tracking events,
built the way a worker builds it, in a process of its own so that its peak memory is its alone,
after the report rollups have counted the ledger (as the periodic job keeps them).

Goals, as ratios because absolute times vary with the load of these shared machines: the whole
build within 1.5x one hand-written SQL pass computing the same figures (HAND_WRITTEN, timed in
the same run, best of two); under 300 MB. Prints the split between the figures and the PDF
building, and the load average."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from sqlalchemy import text

from tests.benchmarks.conftest import ROWS, report
from tests.benchmarks.load import load_average
from tests.conftest import ROOT

STEPS = 4  # message steps; each contact gets one delivery per step
HTML = '<p>{{ contact.name | default("客户") }}</p><a href="{{ unsubscribe_url }}">退订</a>'


# SQL written by hand for the same figures, each part read once: the campaign's totals; per
# province, industry, lifecycle stage and tag; per step and channel, with each channel's
# contacts counted once and conversions within 30 days after each message.
HAND_WRITTEN = """
WITH m AS (
  SELECT d.campaign_id, d.contact_id, d.step_id, d.channel,
         count(*) FILTER (WHERE d.status <> 'excluded') AS audience,
         count(*) FILTER (WHERE d.status IN ('sent', 'bounced', 'failed')) AS attempted,
         count(*) FILTER (WHERE d.status = 'sent') AS delivered,
         count(*) FILTER (WHERE d.status = 'bounced') AS hard_bounces,
         count(*) FILTER (WHERE d.status = 'failed' AND d.reason = 'soft_bounce') AS soft_bounces,
         count(*) FILTER (WHERE d.status = 'sent' AND d.opened_at IS NOT NULL) AS opens,
         count(*) FILTER (WHERE d.status = 'sent' AND d.clicked_at IS NOT NULL) AS clicks,
         count(*) FILTER (WHERE d.unsubscribed_at IS NOT NULL) AS unsubscribes,
         min(d.sent_at) FILTER (WHERE d.status = 'sent') AS first_sent,
         max(d.sent_at) FILTER (WHERE d.status = 'sent') AS last_sent
    FROM deliveries d WHERE d.campaign_id = :campaign
   GROUP BY GROUPING SETS ((d.campaign_id, d.contact_id), (d.step_id), (d.channel))
), pair AS (
  SELECT m.*, (m.delivered > 0)::int AS reached FROM m WHERE m.contact_id IS NOT NULL
), purchases AS (
  SELECT id, contact_id, occurred_at, coalesce((properties ->> 'amount')::float, 0) AS amount
    FROM contact_events WHERE kind = 'purchase'
), conv AS (
  SELECT p.campaign_id, p.contact_id, sum(e.amount) AS revenue
    FROM pair p JOIN purchases e ON e.contact_id = p.contact_id
     AND e.occurred_at >= p.first_sent AND e.occurred_at < p.last_sent + interval '30 days'
   GROUP BY p.campaign_id, p.contact_id
), rc AS (
  SELECT p.*, (conv.contact_id IS NOT NULL)::int AS converted, coalesce(conv.revenue, 0) AS revenue
    FROM pair p LEFT JOIN conv ON conv.campaign_id = p.campaign_id AND conv.contact_id = p.contact_id
), message_conv AS (
  SELECT DISTINCT d.step_id, d.channel, d.contact_id, e.id, e.amount
    FROM deliveries d JOIN purchases e ON e.contact_id = d.contact_id
     AND e.occurred_at >= d.sent_at AND e.occurred_at < d.sent_at + interval '30 days'
   WHERE d.campaign_id = :campaign AND d.status = 'sent'
)
SELECT c.province, c.industry, c.lifecycle_stage, NULL AS tag, sum(audience), sum(attempted), sum(delivered),
       sum(hard_bounces), sum(soft_bounces), sum(opens), sum(clicks), sum(unsubscribes), sum(reached),
       sum(converted), sum(revenue)
  FROM rc JOIN contacts c ON c.id = rc.contact_id
 GROUP BY GROUPING SETS ((), (c.province), (c.industry), (c.lifecycle_stage))
UNION ALL
SELECT NULL, NULL, NULL, coalesce(t.name, ''), sum(audience), sum(attempted), sum(delivered), sum(hard_bounces),
       sum(soft_bounces), sum(opens), sum(clicks), sum(unsubscribes), sum(reached), sum(converted), sum(revenue)
  FROM rc LEFT JOIN contact_tags ct ON ct.contact_id = rc.contact_id LEFT JOIN tags t ON t.id = ct.tag_id
 GROUP BY coalesce(t.name, '')
UNION ALL
SELECT step_id::text, channel, NULL, NULL, audience, attempted, delivered, hard_bounces, soft_bounces, opens, clicks,
       unsubscribes, delivered, NULL, NULL
  FROM m WHERE m.contact_id IS NULL
UNION ALL
SELECT step_id::text, channel, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       count(DISTINCT contact_id), sum(amount)
  FROM message_conv GROUP BY GROUPING SETS ((step_id), (channel))
UNION ALL
SELECT NULL, channel, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(DISTINCT contact_id), NULL, NULL
  FROM deliveries WHERE campaign_id = :campaign AND status = 'sent' GROUP BY channel
"""


def _generate(app, make_user, rows: int = ROWS) -> int:
    """The campaign, its contacts, ledger (`rows` deliveries) and events, generated inside PostgreSQL."""
    from portal.auth.models import User
    from portal.campaigns.models import Campaign, CampaignStep
    from portal.content import service as content
    from portal.extensions import db
    from portal.reports.models import CampaignCost

    contacts = rows // STEPS
    with app.app_context():
        author = db.session.get(User, make_user("operations_specialist"))
        reviewer = db.session.get(User, make_user("reviewer"))
        manager = db.session.get(User, make_user("marketing_manager", name="王经理"))
        asset = content.create_asset(author, "email", "春季新品发布会邀请")
        content.save_draft(author, asset.latest.id, {"subject": "邀请", "html_body": HTML})
        content.submit_for_review(author, asset.latest.id)
        content.approve(reviewer, asset.latest.id)
        campaign = Campaign(name="春季新品发布会", owner_id=manager.id, status="running", goal_target=5, goal_days=30)
        db.session.add(campaign)
        db.session.flush()
        steps = [
            CampaignStep(
                campaign_id=campaign.id, position=n, kind="message", channel=channel, content_version_id=asset.latest.id
            )
            for n, channel in enumerate(("email", "email", "sms", "wecom"))
        ]
        db.session.add_all(steps)
        db.session.flush()
        db.session.add(CampaignCost(campaign_id=campaign.id, spent_on=campaign.created_at.date(), cost=250000))
        db.session.commit()
        step_ids = ",".join(str(s.id) for s in steps)
        params = {"campaign": campaign.id, "version": asset.latest.id, "contacts": contacts}
        db.session.execute(
            text("""
            INSERT INTO contacts (email, name, company, industry, province, city, company_size, attributes, score,
                                  lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed, suppression_reason,
                                  created_at, updated_at)
            SELECT 'rep' || g || '@example.com', '客户' || g, '',
                   (ARRAY['科技','零售','制造','金融','教育'])[1 + g % 5],
                   (ARRAY['上海市','浙江省','江苏省','广东省','北京市','四川省','湖北省','福建省'])[1 + g % 8],
                   '', '', '{}', 60, (ARRAY['new','growing','stable','dormant'])[1 + g % 4],
                   false, '', false, '', now(), now()
            FROM generate_series(1, :contacts) AS g
        """),
            params,
        )
        db.session.execute(text("INSERT INTO tags (name, description, created_at) VALUES ('高意向客户', '', now())"))
        db.session.execute(
            text("""
            INSERT INTO contact_tags (contact_id, tag_id, source, added_at)
            SELECT id, (SELECT id FROM tags WHERE name = '高意向客户'), 'bench', now() FROM contacts WHERE id % 5 = 0
        """)
        )
        # Statuses: 2 % excluded, 3 % bounced, 2 % soft bounces, the rest sent over two weeks.
        db.session.execute(
            text(f"""
            INSERT INTO deliveries (campaign_id, step_id, contact_id, channel, content_version_id, variant, status,
                                    reason, due_at, attempts, sent_at, result_detail, result_message, created_at)
            SELECT :campaign, s.step_id, c.id, s.channel, :version, '',
                   CASE WHEN c.id % 100 < 2 THEN 'excluded' WHEN c.id % 100 < 5 THEN 'bounced'
                        WHEN c.id % 100 < 7 THEN 'failed' ELSE 'sent' END,
                   CASE WHEN c.id % 100 < 2 THEN 'unsubscribed' WHEN c.id % 100 BETWEEN 5 AND 6 THEN 'soft_bounce'
                        ELSE '' END,
                   timestamptz '2026-03-01 01:00+00' + (s.n * 3 || ' days')::interval, 1,
                   CASE WHEN c.id % 100 >= 7 THEN timestamptz '2026-03-01 01:00+00'
                        + (s.n * 3 || ' days')::interval + (c.id % 600 || ' minutes')::interval END,
                   '', '', now()
            FROM contacts c
            CROSS JOIN (SELECT step_id, n, (ARRAY['email','email','sms','wecom'])[n + 1] AS channel
                        FROM unnest(ARRAY[{step_ids}]) WITH ORDINALITY AS t(step_id, o),
                             LATERAL (SELECT (o - 1)::int AS n) x) s
        """),
            params,
        )
        # Tracking: opens on ~23 % of deliveries, clicks on ~6 %, unsubscribes on 0.5 %; purchases by 1 in 7 contacts.
        for kind, condition, extra in (
            ("email_open", "(d.id * 7919) % 100 < 23", "''"),
            ("email_click", "(d.id * 7919) % 100 < 6", "'https://www.example.com/p/' || d.id % 20"),
            ("unsubscribe", "(d.id * 7919) % 1000 < 5", "''"),
        ):
            db.session.execute(
                text(f"""
                INSERT INTO contact_events (contact_id, kind, occurred_at, properties, source)
                SELECT d.contact_id, '{kind}', d.sent_at + (d.id % 2880 || ' minutes')::interval,
                       json_build_object('delivery_id', d.id, 'url', {extra}), 'tracking'
                FROM deliveries d WHERE d.status = 'sent' AND {condition}
            """)
            )
        db.session.execute(
            text("""
            INSERT INTO contact_events (contact_id, kind, occurred_at, properties, source)
            SELECT c.id, 'purchase', timestamptz '2026-03-01 01:00+00' + (c.id % 40 || ' days')::interval,
                   json_build_object('amount', 100 + c.id % 900), 'api:shop'
            FROM contacts c WHERE c.id % 7 = 0
        """)
        )
        # What the tracking endpoints write on each ledger row beside the events.
        db.session.execute(
            text("""
            UPDATE deliveries AS d
               SET opened_at = t.first_open, clicked_at = t.first_click, unsubscribed_at = t.first_unsubscribe
              FROM (SELECT (properties ->> 'delivery_id')::bigint AS delivery_id,
                           min(occurred_at) FILTER (WHERE kind IN ('email_open', 'email_click')) AS first_open,
                           min(occurred_at) FILTER (WHERE kind = 'email_click') AS first_click,
                           min(occurred_at) FILTER (WHERE kind = 'unsubscribe') AS first_unsubscribe
                      FROM contact_events WHERE kind IN ('email_open', 'email_click', 'unsubscribe')
                     GROUP BY 1) AS t
             WHERE d.id = t.delivery_id
        """)
        )
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()  # statistics written inside a transaction vanish with its rollback
        report("deliveries", db.session.scalar(text("SELECT count(*) FROM deliveries")))
        report("events", db.session.scalar(text("SELECT count(*) FROM contact_events")))
        return campaign.id


def test_campaign_pdf_with_a_million_deliveries(app, make_user, worker_env):
    from portal.extensions import db
    from portal.reports import rollups
    from portal.reports.models import Report

    campaign_id = _generate(app, make_user)
    with app.app_context():
        from sqlalchemy import select

        started = time.perf_counter()
        report("rollup_count_contacts", rollups.refresh())
        report("rollup_count_seconds", f"{time.perf_counter() - started:.1f}")
        db.session.execute(text("ANALYZE"))
        db.session.commit()

        from portal.auth.models import User

        owner = db.session.scalar(select(User).where(User.name == "王经理"))
        row = Report(
            kind="campaign_pdf",
            params={"campaign_ids": [campaign_id]},
            created_by_id=owner.id,
            title="营销活动报告：春季新品发布会",
        )
        db.session.add(row)
        db.session.commit()
        report_id = row.id

    # What a worker does, in a process of its own; the progress callback marks the phases.
    script = textwrap.dedent(f"""
        import resource, time
        from portal import create_app
        from portal.reports import service
        app = create_app()
        with app.app_context():
            marks = {{}}
            def progress(percent, message):
                marks.setdefault(percent, time.perf_counter())
            started = time.perf_counter()
            report = service.build_report_file({report_id}, progress)
            ended = time.perf_counter()
            sql = marks[50] - marks[10]
            print("RESULT", ended - started, sql, ended - marks[50], report.file_size, report.status,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=worker_env, capture_output=True, text=True, check=True
    ).stdout
    seconds, sql, pdf, size, status, rss_mb = output.split("RESULT")[1].split()
    seconds, sql, pdf = float(seconds), float(sql), float(pdf)
    assert status == "ready"
    hand = float("inf")
    with app.app_context():
        for _ in range(2):
            started = time.perf_counter()
            db.session.execute(text(HAND_WRITTEN), {"campaign": campaign_id}).all()
            hand = min(hand, time.perf_counter() - started)
            db.session.commit()
    report("load_average", load_average())
    report("report_seconds", f"{seconds:.2f}")
    report("hand_written_sql_seconds", f"{hand:.2f}")
    report("report_ratio", f"{seconds / hand:.2f}")
    report("report_goal_ratio", 1.5)
    report("sql_seconds", f"{sql:.2f}")
    report("pdf_seconds", f"{pdf:.2f}")
    report("sql_share", f"{sql / seconds:.2f}")
    report("pdf_share", f"{pdf / seconds:.2f}")
    report("pdf_bytes", size)
    report("worker_peak_rss_mb", rss_mb)
    report("worker_goal_rss_mb", 300)
