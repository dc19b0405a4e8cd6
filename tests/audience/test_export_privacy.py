import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta

from openpyxl import load_workbook
from sqlalchemy import select

from portal.audience.models import Contact, ContactEvent, Segment
from portal.extensions import db
from portal.queue import JobRun


def seed(app, owner_id):
    with app.app_context():
        db.session.add_all(
            [
                Contact(email="a@example.com", name="=cmd|' /C calc'!A0", province="上海市", score=90),
                Contact(email="b@example.com", name="普通客户", province="上海市", score=50),
            ]
        )
        db.session.add(
            Segment(
                name="上海",
                rules={"op": "and", "items": [{"field": "province", "operator": "eq", "value": "上海"}]},
                created_by_id=owner_id,
            )
        )
        db.session.commit()
        return db.session.scalar(select(Segment.id))


def wait(app, run_id):
    for _ in range(150):
        with app.app_context():
            run = db.session.get(JobRun, run_id)
            if run.done:
                return run.status
        time.sleep(0.2)
    raise AssertionError("export did not finish")


def test_export_needs_the_permission_and_a_recent_sign_in(app, client, login_as, make_user):
    login_as("operations_specialist")
    segment_id = seed(app, None)
    assert client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"}).status_code == 403
    stale = app.test_client()
    user_id = make_user("marketing_manager")
    with stale.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["signed_in_at"] = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    response = stale.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert response.status_code == 302 and "reauth=1" in response.headers["Location"]
    with app.app_context():
        assert db.session.scalar(select(JobRun)) is None


def test_csv_and_xlsx_exports_neutralise_formulas_and_are_audited(
    app, client, login_as, make_user, start_worker, step_up
):
    user_id = login_as("marketing_manager")
    step_up()
    segment_id = seed(app, user_id)
    start_worker()
    for file_format in ("csv", "xlsx"):
        response = client.post(f"/audience/segments/{segment_id}/export", data={"format": file_format})
        run_id = int(response.headers["Location"].rsplit("/", 1)[-1])
        assert wait(app, run_id) == "finished"
        download = client.get(f"/audience/exports/{run_id}")
        assert download.status_code == 200
        if file_format == "csv":
            rows = list(csv.reader(io.StringIO(download.get_data().decode("utf-8-sig"))))
            names = [row[3] for row in rows[1:]]
            assert sorted(names) == sorted(["'=cmd|' /C calc'!A0", "普通客户"])
        else:
            # An XLSX cell is typed text: shown as it is, never run, so no ' is needed.
            sheet = load_workbook(io.BytesIO(download.get_data())).active
            cells = [row[3] for row in sheet.iter_rows(min_row=2)]
            assert sorted(c.value for c in cells) == sorted(["=cmd|' /C calc'!A0", "普通客户"])
            assert {c.data_type for c in cells} == {"s"}
    # Another manager cannot download it.
    other = app.test_client()
    with other.session_transaction() as session:
        session["_user_id"] = str(make_user("marketing_manager"))
    assert other.get(f"/audience/exports/{run_id}").status_code == 404
    from portal.audit import AuditEvent

    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action)))
    assert actions.count("segment.exported") == 2 and actions.count("export.downloaded") == 2


def test_privacy_export_contains_everything_and_erase_removes_personal_data(app, client, login_as, step_up):
    login_as("marketing_manager")
    step_up()
    with app.app_context():
        contact = Contact(email="p@example.com", mobile="+8613800138000", name="张三", attributes={"职位": "经理"})
        db.session.add(contact)
        db.session.flush()
        db.session.add(ContactEvent(contact_id=contact.id, kind="download", properties={"file": "白皮书.pdf"}))
        db.session.commit()
        contact_id = contact.id
    confirmation = client.get(f"/audience/contacts/{contact_id}/privacy-export")
    assert confirmation.status_code == 200 and '<form method="post"' in confirmation.get_data(as_text=True)
    data = json.loads(client.post(f"/audience/contacts/{contact_id}/privacy-export").get_data(as_text=True))
    assert data["contact"]["name"] == "张三" and data["events"][0]["properties"] == {"file": "白皮书.pdf"}
    assert client.post(f"/audience/contacts/{contact_id}/erase").status_code == 303
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        assert (contact.email, contact.mobile, contact.name, contact.attributes) == (None, None, "", {})
        assert contact.suppressed and contact.unsubscribed
        event = db.session.scalar(select(ContactEvent))
        assert event.properties == {} and event.kind == "download"  # statistics keep the anonymous event


def test_privacy_requests_need_a_recent_sign_in(app, client, login_as):
    login_as("marketing_manager", signed_in_minutes_ago=30)
    with app.app_context():
        db.session.add(Contact(email="q@example.com"))
        db.session.commit()
        contact_id = db.session.scalar(select(Contact.id))
    response = client.post(f"/audience/contacts/{contact_id}/erase")
    assert response.status_code == 302 and "reauth=1" in response.headers["Location"]
    with app.app_context():
        assert db.session.get(Contact, contact_id).email == "q@example.com"


def test_erasure_keeps_campaign_figures_but_not_the_person(app, client, login_as, step_up):
    login_as("marketing_manager")
    step_up()
    with app.app_context():
        contact = Contact(email="li@example.com", name="李四")
        db.session.add(contact)
        db.session.flush()
        db.session.add(
            ContactEvent(
                contact_id=contact.id, kind="email_click", properties={"delivery_id": 41, "url": "https://x.example"}
            )
        )
        db.session.commit()
        contact_id = contact.id
    assert client.post(f"/audience/contacts/{contact_id}/erase").status_code in (302, 303)
    with app.app_context():
        event = db.session.scalar(select(ContactEvent).where(ContactEvent.contact_id == contact_id))
        assert event.properties == {"delivery_id": 41}  # which message it was, not who or where


def test_xlsx_export_keeps_phone_numbers_as_they_are_and_survives_control_characters(
    app, client, login_as, start_worker, step_up
):
    user_id = login_as("marketing_manager")
    step_up()
    segment_id = seed(app, user_id)
    with app.app_context():
        db.session.add(
            Contact(email="c@example.com", name="控制\x01字符\x1b", mobile="+8613800138000", province="上海市")
        )
        db.session.commit()
    start_worker()
    response = client.post(f"/audience/segments/{segment_id}/export", data={"format": "xlsx"})
    run_id = int(response.headers["Location"].rsplit("/", 1)[-1])
    assert wait(app, run_id) == "finished"
    job_page = client.get(f"/jobs/{run_id}").get_data(as_text=True)
    assert f'href="/audience/exports/{run_id}"' in job_page  # the job page links to the file
    sheet = load_workbook(io.BytesIO(client.get(f"/audience/exports/{run_id}").get_data())).active
    rows = {row[1]: row for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert rows["c@example.com"][2] == "+8613800138000" and rows["c@example.com"][3] == "控制字符"


def test_privacy_export_is_not_made_by_a_get(app, client, login_as):
    from portal.audit import AuditEvent

    login_as("marketing_manager")
    with app.app_context():
        contact = Contact(email="p@example.com", name="张三")
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id
    page = client.get(f"/audience/contacts/{contact_id}/privacy-export")
    assert page.status_code == 200 and page.mimetype == "text/html"
    with app.app_context():
        assert "privacy.exported" not in set(db.session.scalars(select(AuditEvent.action)))
    assert client.get("/audience/contacts/999999/privacy-export").status_code == 404
