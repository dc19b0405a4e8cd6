"""The settings page: administrators change caps, thresholds and lead-scoring values, audited."""

import re

from sqlalchemy import select

from portal import settings
from portal.audit import AuditEvent
from portal.extensions import db


def _form(**changes):
    form = {key: str(value) for key, value in settings.DEFAULTS.items() if not isinstance(value, bool)}
    form["alerts.auto_pause"] = "1"
    form.update({k.replace("__", "."): str(v) for k, v in changes.items()})
    return form


def test_an_administrator_changes_a_frequency_cap_and_the_change_is_audited(app, client, login_as):
    login_as("administrator")
    form = _form()
    form["sending.max_per_contact_per_day"] = "5"
    response = client.post("/admin/settings", data=form)
    assert response.status_code == 303
    with app.app_context():
        assert settings.get("sending.max_per_contact_per_day") == 5
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "setting.changed"))
        assert event.details == {"setting": "sending.max_per_contact_per_day", "before": 2, "after": 5}
    page = client.get("/admin/settings").get_data(as_text=True)
    assert "设置已保存：修改了 1 项。" in page and 'value="5"' in page
    audit_page = client.get("/admin/audit").get_data(as_text=True)
    assert "每位联系人每天最多营销消息数：2 → 5。" in audit_page


def test_a_bad_value_is_refused_with_a_sentence_and_nothing_is_saved(app, client, login_as):
    login_as("administrator")
    form = _form()
    form["scoring.mql_threshold"] = "90"
    form["alerts.max_bounce_rate"] = "abc"
    response = client.post("/admin/settings", data=form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "最高退信率（%）：请填写 0 到 100 之间的整数。" in page and 'value="abc"' in page
    with app.app_context():
        assert settings.get("scoring.mql_threshold") == 80
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "setting.changed")) is None


def test_switching_auto_pause_off_is_a_change_too(app, client, login_as):
    login_as("administrator")
    form = _form()
    del form["alerts.auto_pause"]
    client.post("/admin/settings", data=form)
    with app.app_context():
        assert settings.get("alerts.auto_pause") is False


def test_only_administrators_reach_the_settings_page(client, login_as):
    login_as("marketing_manager")
    assert client.get("/admin/settings").status_code == 403
    assert client.post("/admin/settings", data=_form()).status_code == 403


def test_the_refused_setting_is_marked_invalid_with_its_reason_read_with_it(client, login_as):
    login_as("administrator")
    response = client.post("/admin/settings", data=_form(alerts__max_bounce_rate="abc"))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    field = re.search(r'<input type="number" id="alerts.max_bounce_rate"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in field and 'aria-describedby="alerts.max_bounce_rate-error"' in field
    assert '<p class="field-error" id="alerts.max_bounce_rate-error">最高退信率（%）：' in page
    assert page.count('aria-invalid="true"') == 1


def test_pacing_per_domain_is_edited_as_domain_rate_pairs(app, client, login_as):
    login_as("administrator")
    form = _form()
    form["pacing.email_domains"] = "qq.com=600, 163.com:300"
    response = client.post("/admin/settings", data=form)
    assert response.status_code == 422
    assert "“163.com:300”" in response.get_data(as_text=True)
    form["pacing.email_domains"] = "qq.com=100\n163.com = 50"
    assert client.post("/admin/settings", data=form).status_code == 303
    with app.app_context():
        assert settings.get("pacing.email_domains") == "qq.com=100, 163.com=50"
