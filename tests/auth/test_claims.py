"""Where the groups come from, and what an absent groups claim means."""

import pytest
from sqlalchemy import select

from portal.admin.service import add_mapping, grants_of
from portal.audit import AuditEvent
from portal.auth import oidc, service
from portal.auth.models import User


def claims(**extra):
    return {"sub": "sub-1", "email": "person@example.com", "name": "Person", **extra}


@pytest.mark.parametrize(
    ("setting", "received", "groups"),
    [
        ("groups", {"groups": ["b", "a", "a"]}, ["a", "b"]),
        ("groups", {"groups": "single"}, ["single"]),
        ("groups", {"groups": []}, []),
        ("realm_access.roles", {"realm_access": {"roles": ["marketing"]}}, ["marketing"]),
        ("groups", {"groups": ["/marketing/managers"]}, ["/marketing/managers"]),
        (
            "groups,roles",
            {"groups": ["6f1c6c4e-2b0a-4a4e-9a39-4b1f2f0d1e11"], "roles": ["Portal.Admin"]},
            ["6f1c6c4e-2b0a-4a4e-9a39-4b1f2f0d1e11", "Portal.Admin"],
        ),
        ("groups,roles", {"roles": ["Portal.Admin"]}, ["Portal.Admin"]),
        ("https://example.com/groups", {"https://example.com/groups": ["x"]}, ["x"]),
        ("groups", {}, None),
        ("groups", {"groups": None}, None),
        ("realm_access.roles", {"realm_access": {}}, None),
    ],
)
def test_groups_are_read_from_the_configured_claims(setting, received, groups):
    assert service.groups_from_claims(claims(**received), setting) == groups


def test_userinfo_must_speak_of_the_same_subject():
    with pytest.raises(oidc.SubjectMismatch):
        oidc.merged_claims({"sub": "a", "iss": "x"}, {"sub": "b", "email": "b@example.com"})


def test_userinfo_completes_but_never_overrides_the_id_tokens_protocol_claims():
    merged = oidc.merged_claims(
        {"sub": "a", "iss": "https://idp", "aud": "portal", "email": "old@example.com"},
        {"sub": "a", "iss": "https://evil", "email": "new@example.com", "groups": ["g"]},
    )
    assert merged == {"sub": "a", "iss": "https://idp", "aud": "portal", "email": "new@example.com", "groups": ["g"]}


def test_group_paths_and_object_ids_map_to_roles(db, app_ctx):
    add_mapping(None, "/marketing/managers", "marketing_manager")
    add_mapping(None, "6f1c6c4e-2b0a-4a4e-9a39-4b1f2f0d1e11", "reviewer")
    user = service.sign_in_from_claims(
        claims(groups=["/marketing/managers"], roles=["6f1c6c4e-2b0a-4a4e-9a39-4b1f2f0d1e11"]), "groups,roles"
    )
    assert grants_of(user.id) == {"marketing_manager": "sso", "reviewer": "sso"}


def test_groups_overage_is_named_for_the_administrator(db, app_ctx):
    overage = claims(_claim_names={"groups": "src1"}, _claim_sources={"src1": {"endpoint": "https://graph"}})
    with pytest.raises(service.SignInRefused) as refused:
        service.sign_in_from_claims(overage, "groups")
    assert refused.value.reason == "groups_overage"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_in.failure"))
    assert event.details["reason"] == "groups_overage" and "_claim_names" in event.details["claims"]


def test_groups_overage_is_refused_even_when_app_roles_arrived(db, app_ctx):
    add_mapping(None, "Portal.Admin", "administrator")
    overage = claims(roles=["Portal.Admin"], _claim_names={"groups": "src1"})
    with pytest.raises(service.SignInRefused) as refused:
        service.sign_in_from_claims(overage, "groups,roles")
    assert refused.value.reason == "groups_overage"


def test_without_a_groups_claim_roles_are_given_in_the_portal(db, app_ctx):
    # Google Workspace sends no groups: OIDC_GROUPS_CLAIM is empty.
    with pytest.raises(service.SignInRefused) as refused:
        service.sign_in_from_claims(claims(), "")
    assert refused.value.reason == "no_access"
    user = db.session.scalar(select(User).where(User.email == "person@example.com"))
    assert user is not None and grants_of(user.id) == {}  # the administrator can now give a role
    from portal.admin.service import replace_grants
    from portal.auth.models import Role

    reviewer = db.session.scalar(select(Role).where(Role.name == "reviewer"))
    replace_grants(user.id, {reviewer.id}, "manual")
    db.session.commit()
    assert service.sign_in_from_claims(claims(), "").id == user.id
    assert grants_of(user.id) == {"reviewer": "manual"}
