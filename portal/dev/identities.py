"""The people the development identity provider knows: one per built-in role.

`make run` preloads them into the provider; the demo SSO mapping turns their groups into
roles. Their subjects are what you type into the provider's login form."""

from __future__ import annotations

DEMO_IDENTITIES: list[dict[str, object]] = [
    {
        "sub": "admin@example.com",
        "email": "admin@example.com",
        "name": "系统管理员 Admin",
        "groups": ["portal-admins"],
        "role": "administrator",
    },
    {
        "sub": "manager@example.com",
        "email": "manager@example.com",
        "name": "王经理 Wang",
        "groups": ["marketing-managers"],
        "role": "marketing_manager",
    },
    {
        "sub": "ops@example.com",
        "email": "ops@example.com",
        "name": "李运营 Li",
        "groups": ["marketing-ops"],
        "role": "operations_specialist",
    },
    {
        "sub": "reviewer@example.com",
        "email": "reviewer@example.com",
        "name": "张审核 Zhang",
        "groups": ["content-reviewers"],
        "role": "reviewer",
    },
    {
        "sub": "analyst@example.com",
        "email": "analyst@example.com",
        "name": "陈分析 Chen",
        "groups": ["data-analysts"],
        "role": "data_analyst",
    },
]

# IdP group -> portal role, as the demo data maps them.
DEMO_GROUP_ROLES: dict[str, str] = {
    str(identity["groups"][0]): str(identity["role"])
    for identity in DEMO_IDENTITIES  # type: ignore[index]
}


def provider_claims(identity: dict[str, object]) -> dict[str, object]:
    """What the provider puts in the ID token for this person."""
    return {key: identity[key] for key in ("sub", "email", "name", "groups")}
