"""Every built-in role gets 403 from every route it may not use: pages, posts and htmx."""

import pytest

from portal.access import BUILTIN_ROLES, may_use


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        args = {name: (1 if "int" in type(conv).__name__.lower() else "x") for name, conv in rule._converters.items()}
        path = rule.build(args, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, path


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_every_forbidden_route_answers_403_for_each_role(app, client, login_as, role):
    login_as(role)
    permissions = frozenset(BUILTIN_ROLES[role]["permissions"])
    checked = 0
    for endpoint, method, path in routes(app):
        if may_use(app.view_functions[endpoint], permissions):
            continue
        page = client.open(path, method=method)
        assert page.status_code == 403, (role, method, path, page.status_code)
        fragment = client.open(path, method=method, headers={"HX-Request": "true"})
        assert fragment.status_code == 403, (role, method, path)
        assert b"<html" not in fragment.data and "HX-Redirect" not in fragment.headers
        checked += 1
    if role != "administrator":
        assert checked > 0


def test_admin_pages_are_refused_to_a_reviewer_and_hidden_from_their_navigation(client, login_as):
    login_as("reviewer")
    assert client.get("/admin/users").status_code == 403
    assert 'href="/admin/users"' not in client.get("/").get_data(as_text=True)


def test_manager_sees_the_people_page_but_not_roles_or_audit(client, login_as):
    login_as("marketing_manager")
    assert client.get("/admin/users").status_code == 200
    assert client.get("/admin/roles").status_code == 403
    assert client.get("/admin/audit").status_code == 403
