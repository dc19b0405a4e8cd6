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
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["time_utc", "actor", "action", "target", "details"]
    assert len(rows) == 2 and rows[1][2] == "user.deactivated"
    assert not any(cell.startswith("=") for cell in rows[1])
    # The export itself is on record.
    assert "audit.exported" in client.get("/admin/audit").get_data(as_text=True)


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
