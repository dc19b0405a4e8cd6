import pytest
from sqlalchemy import select

from portal.admin.service import AdminError, save_custom_role, set_manual_roles
from portal.audit import AuditEvent
from portal.auth.models import Role, User
from portal.extensions import db


def test_manager_may_give_marketing_roles_but_never_administrator(app, make_user):
    with app.app_context():
        manager = db.session.get(User, make_user("marketing_manager"))
        target = make_user("reviewer")
        set_manual_roles(manager, target, {"reviewer", "data_analyst"})
        assert {r.name for r in db.session.get(User, target).roles} == {"reviewer", "data_analyst"}
        with pytest.raises(AdminError):
            set_manual_roles(manager, target, {"administrator"})


def test_manager_cannot_take_away_a_role_outside_their_reach(app, make_user):
    with app.app_context():
        manager = db.session.get(User, make_user("marketing_manager"))
        target = make_user("administrator", "reviewer")
        set_manual_roles(manager, target, set())
        assert {r.name for r in db.session.get(User, target).roles} == {"administrator"}


def test_role_changes_are_audited_with_before_and_after(app, make_user):
    with app.app_context():
        admin = db.session.get(User, make_user("administrator"))
        target = make_user("reviewer")
        set_manual_roles(admin, target, {"data_analyst"})
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.roles_changed"))
        assert event.actor_id == admin.id
        assert event.details["before"] == {"reviewer": "manual"}
        assert event.details["after"] == {"data_analyst": "manual"}


def test_custom_role_from_the_permission_list_grants_exactly_those(app, client, make_user, login_as):
    with app.app_context():
        admin = db.session.get(User, make_user("administrator"))
        save_custom_role(admin, "report_reader", "Report reader", {"dashboard.view", "reports.view"})
        with pytest.raises(AdminError):
            save_custom_role(admin, "bad", "Bad", {"no.such.permission"})
        builtin = db.session.scalar(select(Role).where(Role.name == "reviewer"))
        with pytest.raises(AdminError):
            save_custom_role(admin, "reviewer", "x", {"dashboard.view"}, role_id=builtin.id)
    login_as("report_reader")
    assert client.get("/").status_code == 200
    assert client.get("/admin/users").status_code == 403


def test_roles_page_creates_a_custom_role(client, login_as):
    login_as("administrator")
    response = client.post(
        "/admin/roles/new",
        data={"name": "campaign_viewer", "label": "Campaign viewer", "permissions": ["campaign.view"]},
    )
    assert response.status_code == 303
    assert "Campaign viewer" in client.get("/admin/roles").get_data(as_text=True)


def test_users_page_searches_and_pages(client, login_as, make_user):
    login_as("administrator", email="root@example.com")
    for n in range(30):
        make_user("reviewer", email=f"reviewer{n:02d}@example.com")
    page = client.get("/admin/users?q=reviewer").get_data(as_text=True)
    assert "reviewer00@example.com" in page and "root@example.com" not in page
    assert "reviewer29@example.com" not in page  # second page
    fragment = client.get("/admin/users?q=reviewer&page=2", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "reviewer29@example.com" in fragment and "<html" not in fragment


def test_deactivate_from_the_user_page(app, client, login_as, make_user):
    login_as("administrator")
    target = make_user("reviewer")
    response = client.post(f"/admin/users/{target}/active", data={"active": "0"})
    assert response.status_code == 303
    with app.app_context():
        assert db.session.get(User, target).active is False
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.deactivated"))


def test_mapping_page_adds_and_removes(app, client, login_as):
    login_as("administrator")
    assert client.post("/admin/sso-mapping", data={"group_name": "crm-team", "role": "reviewer"}).status_code == 303
    assert "crm-team" in client.get("/admin/sso-mapping").get_data(as_text=True)
    with app.app_context():
        from portal.auth.models import SsoGroupMapping

        mapping_id = db.session.scalar(select(SsoGroupMapping.id))
    assert client.post(f"/admin/sso-mapping/{mapping_id}/delete").status_code == 303
    assert "crm-team" not in client.get("/admin/sso-mapping").get_data(as_text=True)


def test_mapping_changes_are_on_record(app, client, login_as):
    login_as("administrator")
    client.post("/admin/sso-mapping", data={"group_name": "crm-team", "role": "reviewer"})
    with app.app_context():
        from portal.auth.models import SsoGroupMapping

        mapping_id = db.session.scalar(select(SsoGroupMapping.id))
    client.post(f"/admin/sso-mapping/{mapping_id}/delete")
    with app.app_context():
        events = [
            (e.action, e.target, e.details.get("role"))
            for e in db.session.scalars(select(AuditEvent).where(AuditEvent.action.like("sso_mapping.%")))
        ]
    assert events == [
        ("sso_mapping.added", "group:crm-team", "reviewer"),
        ("sso_mapping.removed", "group:crm-team", "reviewer"),
    ]
