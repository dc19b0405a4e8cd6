import csv
import io

from portal import audit
from portal.extensions import db


def add_events(app):
    with app.app_context():
        audit.record(None, "sign_in.failure", "mallory@example.com", {"reason": "no_access"})
        audit.record(None, "user.deactivated", "user:7", {"email": '=HYPERLINK("http://evil")'})
        db.session.commit()


def test_audit_page_filters_by_action(app, client, login_as):
    login_as("administrator")
    add_events(app)
    html = client.get("/admin/audit?action=sign_in.failure").get_data(as_text=True)
    assert "mallory@example.com" in html and "user:7" not in html


def test_audit_csv_exports_filtered_rows_with_formulas_neutralised(app, client, login_as):
    login_as("administrator")
    add_events(app)
    response = client.get("/admin/audit.csv?target=user:7")
    body = response.get_data(as_text=True)
    assert body.startswith("\ufeff"), "Excel needs the BOM to read UTF-8"
    rows = list(csv.reader(io.StringIO(body.removeprefix("\ufeff"))))
    assert rows[0] == ["时间", "操作人", "操作", "对象", "详情"]
    assert len(rows) == 2 and rows[1][2] == "已停用用户" and rows[1][3] == "用户 #7"
    assert not any(cell.startswith("=") for cell in rows[1])
    # The export itself is on record.
    assert "已导出审计日志" in client.get("/admin/audit").get_data(as_text=True)


def test_audit_log_is_for_administrators_only(client, login_as):
    login_as("marketing_manager")
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/audit.csv").status_code == 403


def test_retention_purge_removes_only_old_events(app):
    from datetime import timedelta

    from sqlalchemy import select

    from jobs.maintenance import purge_expired_audit_events
    from portal.audit import AuditEvent
    from portal.models_base import utcnow

    with app.app_context():
        old = audit.record(None, "sign_out", "old")
        audit.record(None, "sign_out", "new")
        old.created_at = utcnow() - timedelta(days=181)
        db.session.commit()
        assert purge_expired_audit_events() == 1
        assert [e.target for e in db.session.scalars(select(AuditEvent))] == ["new"]


def test_the_app_has_no_route_that_changes_audit_events(app):
    for rule in app.url_map.iter_rules():
        if "audit" in rule.rule:
            assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, rule


def test_audit_date_filter_uses_the_days_people_see(app, client, login_as):
    """20:00 UTC on 1 January is 04:00 on 2 January in Shanghai, where the table shows it."""
    from datetime import UTC, datetime

    login_as("administrator")
    with app.app_context():
        event = audit.record(None, "user.deactivated", "user:late-evening")
        event.created_at = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)
        db.session.commit()
    second = client.get("/admin/audit?from=2026-01-02&to=2026-01-02").get_data(as_text=True)
    first = client.get("/admin/audit?from=2026-01-01&to=2026-01-01").get_data(as_text=True)
    assert "用户 #late-evening" in second
    assert "用户 #late-evening" not in first


def test_audit_log_pages_through_many_events(app, client, login_as):
    login_as("administrator")
    with app.app_context():
        for number in range(60):
            audit.record(None, "user.deactivated", f"user:{number:03d}")
        db.session.commit()
    first = client.get("/admin/audit?action=user.deactivated").get_data(as_text=True)
    second = client.get("/admin/audit?action=user.deactivated&page=2").get_data(as_text=True)
    shown_first = {n for n in range(60) if f"用户 #{n:03d}<" in first}
    shown_second = {n for n in range(60) if f"用户 #{n:03d}<" in second}
    assert len(shown_first) == 50 and len(shown_second) == 10
    assert not shown_first & shown_second


def test_audit_csv_details_are_sentences_with_local_times(app, client, login_as):
    from datetime import UTC, datetime

    login_as("administrator")
    with app.app_context():
        event = audit.record(None, "sign_in.failure", "mallory@example.com", {"reason": "no_access"})
        event.created_at = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)
        db.session.commit()
    response = client.get("/admin/audit.csv?action=sign_in.failure")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).removeprefix("\ufeff"))))
    assert rows[1][4] == "登录被拒绝：该人员所在的组都没有对应的角色。"
    assert rows[1][0] == "2026-01-02 04:00:00+08:00"  # Shanghai time, with its offset


def test_the_audit_csv_link_carries_the_filters_shown(app, client, login_as):
    login_as("administrator")
    add_events(app)
    fragment = client.get("/admin/audit?action=sign_in.failure&who=x", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert 'id="audit-csv"' in html and "action=sign_in.failure" in html and "who=x" in html


def test_audit_date_range_labels_are_dates_not_mail_fields_in_chinese(client, login_as):
    login_as("administrator")
    html = client.get("/admin/audit", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "起始日期" in html and "截止日期" in html
    assert "发件人" not in html


def test_audit_details_show_chinese_as_written_and_escape_markup(app, client, login_as):
    login_as("administrator")
    with app.app_context():
        audit.record(None, "content.created", "asset:9", {"name": "春季新品<script>"})
        db.session.commit()
    html = client.get("/admin/audit").get_data(as_text=True)
    assert "春季新品&lt;script&gt;" in html
    assert "\\u6625" not in html and "春季新品<script>" not in html


def test_audit_csv_neutralises_every_formula_prefix(app, client, login_as):
    login_as("administrator")
    with app.app_context():
        for prefix in ("=", "+", "-", "@"):
            audit.record(None, "user.deactivated", f"{prefix}cmd|' /C calc'!A0")
        db.session.commit()
    response = client.get("/admin/audit.csv?action=user.deactivated")
    targets = [row[3] for row in list(csv.reader(io.StringIO(response.get_data(as_text=True))))[1:]]
    assert sorted(targets) == sorted(f"'{p}cmd|' /C calc'!A0" for p in ("=", "+", "-", "@"))
