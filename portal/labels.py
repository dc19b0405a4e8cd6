"""What a person reads for each internal value: one table per kind of enumeration.

Templates never print a status, role, permission id, event kind or channel as stored; they
ask `label(kind, value)` (or a sentence helper below) and get the reader's language. Areas
with labels of their own (content statuses, campaign statuses, report kinds) keep them in
their views; everything shared by several areas lives here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from portal import audit
from portal.access import Permission

ROLES = {
    "administrator": _l("Administrator"),
    "marketing_manager": _l("Marketing manager"),
    "operations_specialist": _l("Operations specialist"),
    "reviewer": _l("Reviewer"),
    "data_analyst": _l("Data analyst"),
}

P = Permission
# (area, [(permission, label, one-line description)]): the roles page groups them by area.
PERMISSION_AREAS: tuple[tuple[Any, tuple[tuple[Permission, Any, Any], ...]], ...] = (
    (
        _l("Administration"),
        (
            (P.DASHBOARD_VIEW, _l("See the dashboard"), _l("Open the home page and its figures.")),
            (P.USERS_MANAGE, _l("Manage users"), _l("Give any role, deactivate and reactivate people.")),
            (P.ROLES_MANAGE, _l("Manage roles"), _l("Create custom roles and choose their permissions.")),
            (
                P.MARKETING_ROLES_ASSIGN,
                _l("Assign marketing roles"),
                _l("Give or take away the marketing roles (not administrator)."),
            ),
            (P.SSO_MAPPING_MANAGE, _l("Map SSO groups"), _l("Decide which identity-provider group gets which role.")),
            (P.SETTINGS_MANAGE, _l("Change settings"), _l("Frequency caps, alert thresholds, lead scoring settings.")),
            (P.AUDIT_VIEW, _l("Read the audit log"), _l("See and export who changed what, and when.")),
            (P.API_TOKENS_MANAGE, _l("Manage API tokens"), _l("Create and revoke the tokens of the events API.")),
            (P.BACKUP_EXPORT, _l("Export a data backup"), _l("Download every table as CSV files.")),
            (P.JOBS_VIEW, _l("See system status"), _l("Check the database, Redis and the background workers.")),
            (P.OUTBOX_VIEW, _l("Read the test outbox"), _l("See the messages a development mail server caught.")),
        ),
    ),
    (
        _l("Content"),
        (
            (P.CONTENT_VIEW, _l("See content"), _l("Read emails, SMS and WeCom messages and their versions.")),
            (P.CONTENT_EDIT, _l("Write content"), _l("Create drafts and submit them for review.")),
            (P.CONTENT_REVIEW, _l("Review content"), _l("Approve content or request changes (never one's own).")),
        ),
    ),
    (
        _l("Audience"),
        (
            (P.AUDIENCE_VIEW, _l("See contacts"), _l("Read contacts, segments, tags and scoring rules.")),
            (P.AUDIENCE_EDIT, _l("Edit contacts"), _l("Change contacts, tags, tag rules, segments and scoring.")),
            (P.AUDIENCE_IMPORT, _l("Import contacts"), _l("Upload CSV or Excel files of contacts.")),
            (
                P.AUDIENCE_BULK_EDIT,
                _l("Change many contacts at once"),
                _l("Tag or untag more than 1,000 contacts (needs a second factor)."),
            ),
            (
                P.AUDIENCE_BULK_EXPORT,
                _l("Export contacts"),
                _l("Download segments and selections of contacts (needs a second factor)."),
            ),
            (
                P.PRIVACY_REQUESTS,
                _l("Handle privacy requests"),
                _l("Export or erase everything held about a person (needs a second factor)."),
            ),
        ),
    ),
    (
        _l("Campaigns"),
        (
            (P.CAMPAIGN_VIEW, _l("See campaigns"), _l("Read campaigns, their steps and progress.")),
            (P.CAMPAIGN_EDIT, _l("Edit campaigns"), _l("Create campaigns and change their steps.")),
            (P.CAMPAIGN_TEST_SEND, _l("Send tests"), _l("Send a campaign's messages to internal test addresses.")),
            (P.CAMPAIGN_EXECUTE, _l("Run campaigns"), _l("Pause and resume running campaigns.")),
            (P.CAMPAIGN_PUBLISH, _l("Publish campaigns"), _l("Start a campaign now or schedule it.")),
            (P.CAMPAIGN_DELETE, _l("Delete campaigns"), _l("Delete a campaign (needs a second factor).")),
        ),
    ),
    (
        _l("Reports"),
        (
            (P.REPORTS_VIEW, _l("See reports"), _l("Read the dashboard figures and campaign reports.")),
            (P.REPORTS_EXPORT, _l("Export reports"), _l("Build PDF and Excel reports.")),
            (P.DATA_EXPORT_BASIC, _l("Export tracking data"), _l("Download campaign tracking tables.")),
            (P.REPORTS_SCHEDULE, _l("Schedule reports"), _l("Have monthly reports built automatically.")),
            (P.CAMPAIGN_COSTS_EDIT, _l("Enter costs"), _l("Record costs and revenue behind CPA and ROI.")),
        ),
    ),
)
del P

PERMISSIONS = {permission: label for _area, rows in PERMISSION_AREAS for permission, label, _desc in rows}
PERMISSION_DESCRIPTIONS = {permission: desc for _area, rows in PERMISSION_AREAS for permission, _label, desc in rows}

CHANNELS = {"email": _l("Email"), "sms": _l("SMS"), "wecom": _l("WeCom")}

# The deliveries ledger (portal/delivery/models.py).
DELIVERY_STATUSES = {
    "pending": _l("Waiting to be sent"),
    "sending": _l("Being sent"),
    "submitted": _l("Handed to WeCom, waiting for the employee"),
    "sent": _l("Sent"),
    "bounced": _l("Bounced"),
    "failed": _l("Failed"),
    "excluded": _l("Left out"),
    "skipped": _l("Skipped at sending"),
    "cancelled": _l("Cancelled"),
}
EXCLUSION_REASONS = {
    "suppressed": _l("suppressed"),
    "unsubscribed": _l("unsubscribed"),
    "no_consent": _l("no consent"),
    "no_address": _l("no address"),
    "frequency_cap": _l("over the frequency cap"),
    "wecom_limit": _l("over WeCom's limit of mass messages per customer"),
    "soft_bounce": _l("kept refusing for a while (soft bounce)"),
}
ATTEMPT_OUTCOMES = {
    "accepted": _l("Accepted"),
    "retry": _l("Refused for now, tried again later"),
    "hard_bounce": _l("The address does not exist"),
    "pause": _l("The receiving side refused us: campaign paused"),
    "failed": _l("Refused for good"),
    "throttled": _l("Too many for the destination: slowed down, tried again later"),
    "submitted": _l("Handed to WeCom as a mass-send task"),
}
# Result details the portal itself gives (the receiving side's own codes are shown as they are).
RESULT_DETAILS = {
    "not_friend": _l("Not (or no longer) a customer of the employee"),
    "not_customer": _l("WeCom does not know this customer for the employee"),
    "wecom_limit": _l("Had already received WeCom's limit of mass messages"),
    "not_confirmed": _l("The employee did not send the mass-send task in time"),
    "duplicate_customer": _l("Another contact is linked to the same WeCom customer"),
    "unsendable": _l("The message could not be made (template or attachment)"),
    "invalid_address": _l("Not a valid address"),
    "too_long": _l("Too long for the channel"),
}
# TestSend.message values the worker sets itself.
TEST_SEND_MESSAGES = {
    "not_company_address": _l("Not sent: the address is no longer one of the company's test addresses."),
}

LIFECYCLE_STAGES = {
    "new": _l("New"),
    "growing": _l("Growing"),
    "stable": _l("Stable"),
    "dormant": _l("Dormant"),
}

CONSENT_STATES = {"granted": _l("Granted"), "withdrawn": _l("Withdrawn"), "none": _l("Not given")}

EVENT_KINDS = {
    "page_view": _l("Page view"),
    "form_submit": _l("Form submitted"),
    "download": _l("Download"),
    "webinar_attended": _l("Webinar attended"),
    "sales_consultation": _l("Sales consultation"),
    "purchase": _l("Purchase"),
    "trade_show": _l("Met at a trade show"),
    "phone_call": _l("Phone call"),
    "note": _l("Note"),
    "consent_change": _l("Consent changed"),
    "email_open": _l("Email opened"),
    "email_click": _l("Email link clicked"),
    "unsubscribe": _l("Unsubscribed"),
    "bounce": _l("Bounced"),
    "mql": _l("Became a marketing-qualified lead"),
    "stage_change": _l("Lifecycle stage changed"),
    "imported": _l("Imported"),
}

JOB_STATES = {
    "queued": _l("Queued"),
    "started": _l("Running"),
    "running": _l("Running"),
    "finished": _l("Finished"),
    "done": _l("Finished"),
    "failed": _l("Failed"),
    "uploaded": _l("Waiting for the column mapping"),
}

JOB_KINDS = {
    "import": _l("Contact import"),
    "export": _l("Contact export"),
    "diagnostics": _l("Diagnostics"),
    "report": _l("Report"),
    "tag_rules": _l("Tag rules"),
    "send": _l("Sending"),
    "test_send": _l("Test send"),
    "campaign_tick": _l("Campaign scheduler"),
}

CONTENT_FIELDS = {
    "subject": _l("Subject"),
    "preheader": _l("Preheader"),
    "html_body": _l("HTML body"),
    "text_body": _l("Plain-text body"),
    "sms_text": _l("SMS text"),
    "wecom_text": _l("Message"),
}

HEALTH_CHECKS = {
    "database": _l("Database"),
    "redis": _l("Redis queue"),
    "workers": _l("Background workers"),
    "smtp": _l("Mail server"),
    "tracking_intake": _l("Opens and clicks waiting to be recorded"),
}

# What a running job says about itself. Jobs store a code and figures (see
# jobs.tracking.Progress.update); the page makes the sentence.
JOB_MESSAGES = {
    "test_sends": _l("%(sent)s sent, %(failed)s failed."),
    "rows": _l("%(done)s of %(total)s rows."),
}

IMPORT_FIELDS = {
    "email": _l("Email"),
    "mobile": _l("Mobile number"),
    "name": _l("Full name"),
    "company": _l("Company"),
    "industry": _l("Industry"),
    "province": _l("Province"),
    "city": _l("City"),
    "company_size": _l("Company size"),
    "wecom_external_userid": _l("WeCom customer ID (external_userid)"),
    "wecom_owner_userid": _l("WeCom owning employee (userid)"),
    "consent_email": _l("Email consent"),
    "consent_sms": _l("SMS consent"),
    "consent_wecom": _l("WeCom consent"),
    "tags": _l("Tags"),
}

# The fields and comparisons of the segment builder (and of conditions read as sentences).
SEGMENT_FIELDS = {
    "province": _l("Province"),
    "region": _l("Sales region"),
    "city": _l("City"),
    "industry": _l("Industry"),
    "company": _l("Company"),
    "company_size": _l("Company size"),
    "name": _l("Full name"),
    "email": _l("Email"),
    "mobile": _l("Mobile number"),
    "tag": _l("Tag"),
    "score": _l("Score"),
    "lifecycle_stage": _l("Lifecycle stage"),
    "consent.email": _l("Email consent"),
    "consent.sms": _l("SMS consent"),
    "consent.wecom": _l("WeCom consent"),
    "unsubscribed": _l("Unsubscribed"),
    "created_days": _l("Created (days ago)"),
    "last_activity_days": _l("Last activity (days ago)"),
    **{
        f"event.{kind}": _l("Event: %(kind)s", kind=EVENT_KINDS[kind])
        for kind in (
            "purchase",
            "email_open",
            "email_click",
            "form_submit",
            "download",
            "webinar_attended",
            "sales_consultation",
            "trade_show",
            "phone_call",
            "page_view",
        )
    },
}
SEGMENT_OPERATORS = {
    "eq": _l("is"),
    "ne": _l("is not"),
    "contains": _l("contains"),
    "in": _l("is one of"),
    "empty": _l("is empty"),
    "not_empty": _l("is not empty"),
    "gte": _l("at least"),
    "lte": _l("at most"),
    "between": _l("between"),
    "has": _l("has"),
    "has_not": _l("has not"),
}


GOAL_METRICS = {
    "conversion_rate": _l("Conversion rate"),
    "click_rate": _l("Click rate"),
    "open_rate": _l("Open rate"),
    "mql_count": _l("MQLs"),
    "revenue": _l("Revenue"),
}

SETTINGS = {
    "scoring.base_score": _l("Score of a new contact"),
    "scoring.mql_threshold": _l("Score at which a contact becomes an MQL"),
    "scoring.mql_tag": _l("Tag given to MQLs"),
    "lifecycle.new_days": _l("Days a contact counts as new"),
    "lifecycle.growing_min_purchases": _l("Purchases for the growing stage"),
    "lifecycle.stable_min_purchases": _l("Purchases for the stable stage"),
    "lifecycle.dormant_days": _l("Days without activity before dormant"),
    "sending.max_per_contact_per_day": _l("Marketing messages per contact per day, at most"),
    "sending.max_emails_per_prospect_per_week": _l("Emails per prospect per week, at most"),
    "alerts.auto_pause": _l("Pause a campaign automatically on an alert"),
    "alerts.min_attempts": _l("Messages settled before alerts are checked"),
    "alerts.min_delivery_rate": _l("Lowest delivery rate (%)"),
    "alerts.max_bounce_rate": _l("Highest bounce rate (%)"),
    "wecom.max_per_customer_per_day": _l("WeCom mass messages per customer per day, at most"),
    "wecom.max_per_customer_per_month": _l("WeCom mass messages per customer per 30 days, at most"),
    "pacing.robot_per_minute": _l("Group robot messages per minute, at most"),
    "pacing.sms_per_minute": _l("Text messages per minute, at most"),
    "pacing.email_domains": _l("Emails per minute per recipient domain"),
    "content.forbidden_words": _l("Forbidden words"),
    "content.link_allow_list": _l("Allowed link domains"),
}

# Authentication methods an identity provider reports in `amr` (RFC 8176).
AMR_METHODS = {
    "mfa": _l("several factors"),
    "otp": _l("one-time code"),
    "hwk": _l("hardware security key"),
    "swk": _l("software key"),
    "sms": _l("code by text message"),
    "tel": _l("phone call"),
    "fpt": _l("fingerprint"),
    "face": _l("face recognition"),
    "iris": _l("iris scan"),
    "retina": _l("retina scan"),
    "vbm": _l("voice recognition"),
    "geo": _l("location"),
    "pin": _l("PIN"),
    "pwd": _l("password"),
    "kba": _l("security questions"),
    "mca": _l("several channels"),
    "pop": _l("proof of possession of a key"),
    "rba": _l("risk-based check"),
    "sc": _l("smart card"),
    "user": _l("user presence test"),
    "wia": _l("Windows sign-in"),
}

LINK_LISTS = {"allow": _l("Allowed"), "deny": _l("Denied"), "shortener": _l("Link shortener")}

TEST_SEND_STATES = {"queued": _l("Queued"), "sent": _l("Sent"), "failed": _l("Failed")}

# The days of a campaign's send window, by ISO number.
WEEKDAYS = {
    "1": _l("Monday"),
    "2": _l("Tuesday"),
    "3": _l("Wednesday"),
    "4": _l("Thursday"),
    "5": _l("Friday"),
    "6": _l("Saturday"),
    "7": _l("Sunday"),
}

# The time zones a campaign can send in (the stored value is the IANA name).
TIMEZONES = {
    "Asia/Shanghai": _l("China (Beijing time, UTC+8)"),
    "Asia/Hong_Kong": _l("Hong Kong (UTC+8)"),
    "Asia/Taipei": _l("Taipei (UTC+8)"),
    "Asia/Singapore": _l("Singapore (UTC+8)"),
    "Asia/Tokyo": _l("Tokyo (UTC+9)"),
    "Europe/London": _l("London"),
    "Europe/Berlin": _l("Berlin"),
    "America/New_York": _l("New York"),
    "America/Los_Angeles": _l("Los Angeles"),
    "UTC": _l("Coordinated Universal Time (UTC)"),
}

TABLES: Mapping[str, Mapping[str, Any]] = {
    "link_list": LINK_LISTS,
    "role": ROLES,
    "permission": PERMISSIONS,
    "channel": CHANNELS,
    "delivery_status": DELIVERY_STATUSES,
    "exclusion": EXCLUSION_REASONS,
    "attempt": ATTEMPT_OUTCOMES,
    "result_detail": RESULT_DETAILS,
    "test_send_message": TEST_SEND_MESSAGES,
    "stage": LIFECYCLE_STAGES,
    "consent": CONSENT_STATES,
    "event": EVENT_KINDS,
    "job_state": JOB_STATES,
    "job_kind": JOB_KINDS,
    "health": HEALTH_CHECKS,
    "content_field": CONTENT_FIELDS,
    "import_field": IMPORT_FIELDS,
    "goal": GOAL_METRICS,
    "setting": SETTINGS,
    "amr": AMR_METHODS,
    "weekday": WEEKDAYS,
    "test_send_state": TEST_SEND_STATES,
    "timezone": TIMEZONES,
}


def join_list(items: Any) -> str:
    """Items one after the other as the reader's language lists them (、 in Chinese)."""
    return _(", ").join(str(item) for item in items)


def label(kind: str, value: Any, fallback: Any = None) -> str:
    """The reader's word for `value` of enumeration `kind`; an unknown value shows `fallback`
    (a custom role's own label) or, at the last, itself."""
    found = TABLES[kind].get(str(value) if value is not None else "")
    if found is not None:
        return str(found)
    if kind == "import_field" and str(value).startswith("attr:"):
        return _("Custom field “%(name)s”", name=str(value)[5:])
    return str(fallback if fallback is not None else value)


def source_label(source: str | None) -> str:
    """Where a consent, tag or event came from: manual, import:12, api:CRM, rule:3, user:5 ..."""
    source = source or ""
    kind, _sep, detail = source.partition(":")
    if kind == "manual":
        return _("entered by hand") if not detail else _("entered by hand by %(who)s", who=detail)
    if kind == "import":
        return _("import #%(id)s", id=detail) if detail else _("import")
    if kind == "api":
        return _("events API (%(name)s)", name=detail)
    if kind == "rule":
        return _("tag rule #%(id)s", id=detail)
    if kind == "user":
        return _("entered by %(who)s", who=detail)
    if kind == "bulk":
        return _("bulk action by %(who)s", who=detail) if detail else _("bulk action")
    words = {
        "scoring": _("lead scoring"),
        "tracking": _("email tracking"),
        "lifecycle": _("lifecycle stages"),
        "system": _("the portal"),
        "unsubscribe": _("the unsubscribe page"),
        "demo": _("demo data"),
        "": _("unknown"),
    }
    return str(words.get(kind, source))


# Notification kinds -> their sentence; parameters come from the notification itself.
NOTIFICATIONS = {
    "contact.became_mql": _l("%(contact)s became an MQL (score %(score)s)."),
    "content.submitted": _l("Waiting for your review: %(asset)s v%(version)s."),
    "content.approved": _l("Approved: %(asset)s v%(version)s."),
    "content.approved_with_comment": _l("Approved: %(asset)s v%(version)s. The reviewer says: %(comment)s"),
    "content.changes_requested": _l("Changes requested on %(asset)s v%(version)s."),
    "content.changes_requested_with_comment": _l("Changes requested on %(asset)s v%(version)s: %(comment)s"),
    "campaign.follow_up": _l("Sales follow-up: %(contact)s (%(campaign)s)."),
}


# Kinds whose sentence is built from structured parameters (a pause reason with its own code),
# registered by the area that sends them, where those translations live.
NOTIFICATION_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {}


def notification_text(kind: str, params: Mapping[str, Any] | None, fallback: str = "") -> str:
    render = NOTIFICATION_RENDERERS.get(kind)
    if render is not None:
        try:
            return render(dict(params or {}))
        except (KeyError, TypeError, ValueError):
            return fallback
    sentence = NOTIFICATIONS.get(kind)
    if sentence is None:
        return fallback
    return str(sentence) % _Details(params or {})


def job_message(stored: str) -> str:
    """A JobRun's message in the reader's language: a code with figures, or the health checks
    of a diagnostics run, one line each. Text from before messages were codes is shown as is."""
    try:
        data = json.loads(stored) if stored else None
    except ValueError:
        return stored
    if not isinstance(data, dict):
        return stored
    code = data.get("code")
    if code == "checks":
        return "\n".join(_check_sentence(check) for check in data.get("checks", []))
    sentence = JOB_MESSAGES.get(str(code))
    return str(sentence) % _Details(data) if sentence is not None else ""


def _check_sentence(check: Mapping[str, Any]) -> str:
    name = label("health", check.get("name"))
    if check.get("ok"):
        return _("%(check)s: reachable (%(ms)s ms)", check=name, ms=check.get("ms"))
    return _("%(check)s: not reachable", check=name)


def register(app: Flask) -> None:
    app.jinja_env.globals.update(
        label=label,
        source_label=source_label,
        permission_areas=PERMISSION_AREAS,
        permission_descriptions=PERMISSION_DESCRIPTIONS,
        audit_action_label=audit_action_label,
        audit_sentence=audit_sentence,
        audit_target_label=audit_target_label,
        event_sentence=event_sentence,
        join_list=join_list,
        notification_text=notification_text,
        job_message=job_message,
        test_send_messages=TEST_SEND_MESSAGES,
    )


# --- the audit trail -------------------------------------------------------------------------

# action -> (what happened, a sentence of its details). The sentence's %(name)s are filled
# from the event's details; a detail the event lacks reads as "—".
AUDIT_ACTIONS: dict[str, tuple[Any, Any]] = {
    "sign_in.success": (_l("Signed in"), _l("Signed in through %(via)s.")),
    "sign_in.failure": (_l("Sign-in refused"), _l("Sign-in refused: %(reason)s.")),
    "sign_out": (_l("Signed out"), None),
    "user.created": (_l("User created"), _l("%(email)s signed in for the first time.")),
    "user.activated": (_l("User reactivated"), _l("%(email)s may sign in again.")),
    "user.deactivated": (_l("User deactivated"), _l("%(email)s was signed out everywhere and may not sign in.")),
    "user.roles_changed": (_l("Roles changed"), _l("Roles of %(email)s: %(before)s → %(after)s.")),
    "user.roles_synced": (_l("Roles renewed from SSO groups"), _l("Roles: %(before)s → %(after)s.")),
    "local_admin.created": (_l("Break-glass account created"), _l("Local account %(email)s.")),
    "local_password.changed": (_l("Local password changed"), None),
    "local_sign_in.locked": (_l("Break-glass sign-in locked"), _l("Too many wrong passwords or codes for %(email)s.")),
    "local_sign_in.unlocked": (_l("Break-glass sign-in unlocked"), _l("Lockout of %(email)s lifted.")),
    "totp.enrolled": (
        _l("Second factor set up"),
        _l("Authenticator app enrolled; %(recovery_codes)s recovery codes made."),
    ),
    "step_up.confirmed": (_l("Second factor confirmed"), _l("Confirmed through %(via)s (acr %(acr)s, amr %(amr)s).")),
    "step_up.refused": (
        _l("Second factor not confirmed"),
        _l("Not confirmed through %(via)s: %(reason)s (acr %(acr)s, amr %(amr)s)."),
    ),
    "role.created": (_l("Role created"), _l("Permissions: %(permissions)s.")),
    "role.changed": (_l("Role changed"), _l("Permissions: %(before)s → %(after)s.")),
    "sso_mapping.added": (_l("SSO mapping added"), _l("The group now gives the role %(role)s.")),
    "sso_mapping.removed": (_l("SSO mapping removed"), _l("The group no longer gives the role %(role)s.")),
    "setting.changed": (_l("Setting changed"), _l("%(setting)s: %(before)s → %(after)s.")),
    "audit.exported": (_l("Audit log exported"), None),
    "contact.created": (_l("Contact created"), _l("Created from %(source)s.")),
    "contact.updated": (_l("Contact changed"), _l("Changed: %(fields)s.")),
    "contact.tagged": (_l("Tag added"), _l("Tag “%(tag)s” added.")),
    "contact.untagged": (_l("Tag removed"), _l("Tag “%(tag)s” removed.")),
    "contact.consent_changed": (_l("Consent changed"), _l("%(channel)s consent: %(before)s → %(after)s.")),
    "contact.owner_changed": (_l("Owner changed"), _l("Owner: %(before)s → %(after)s.")),
    "contact.note_added": (_l("Note added"), None),
    "contact.activity_logged": (_l("Activity logged"), _l("%(kind)s logged.")),
    "contact.unsubscribe": (_l("Contact unsubscribed"), None),
    "contacts.bulk_tagged": (_l("Tag added to many contacts"), _l("Tag “%(tag)s” added to %(count)s contacts.")),
    "contacts.bulk_untagged": (
        _l("Tag removed from many contacts"),
        _l("Tag “%(tag)s” removed from %(count)s contacts."),
    ),
    "contacts.exported": (_l("Contacts exported"), _l("%(count)s contacts exported.")),
    "tag.created": (_l("Tag created"), _l("Tag “%(name)s”.")),
    "tag.renamed": (_l("Tag renamed"), _l("“%(before)s” → “%(after)s”.")),
    "tag.merged": (_l("Tags merged"), _l("“%(source)s” merged into “%(into)s”.")),
    "tag.deleted": (_l("Tag deleted"), _l("Tag “%(name)s” removed from %(count)s contacts and deleted.")),
    "tag_rule.saved": (_l("Tag rule saved"), _l("Rule for the tag “%(tag)s”.")),
    "tag_rule.disabled": (_l("Tag rule disabled"), _l("Rule for the tag “%(tag)s”.")),
    "tag_rule.enabled": (_l("Tag rule enabled"), _l("Rule for the tag “%(tag)s”.")),
    "tag_rule.deleted": (_l("Tag rule deleted"), _l("Rule for the tag “%(tag)s”.")),
    "segment.saved": (_l("Segment saved"), _l("Segment “%(name)s”.")),
    "segment.deleted": (_l("Segment deleted"), _l("Segment “%(name)s”.")),
    "segment.exported": (_l("Segment exported"), _l("Segment “%(name)s”.")),
    "export.downloaded": (_l("Export downloaded"), None),
    "scoring.rule_saved": (_l("Scoring rule saved"), _l("%(points)s points for %(event)s.")),
    "import.uploaded": (_l("Contact file uploaded"), _l("%(bytes)s bytes.")),
    "import.started": (_l("Contact import started"), None),
    "import.finished": (_l("Contact import finished"), None),
    "import.failed": (_l("Contact import failed"), None),
    "import.encoding_chosen": (_l("File encoding chosen"), _l("Read as %(encoding)s.")),
    "privacy.exported": (_l("Personal data exported"), None),
    "privacy.erased": (_l("Personal data erased"), None),
    "api_token.created": (_l("API token created"), None),
    "api_token.revoked": (_l("API token revoked"), None),
    "content.created": (_l("Content created"), _l("“%(name)s”.")),
    "content.draft_saved": (_l("Draft saved"), None),
    "content.new_version": (_l("New version started"), None),
    "content.submitted": (_l("Submitted for review"), _l("%(warnings)s warnings.")),
    "content.withdrawn": (_l("Withdrawn from review"), None),
    "content.approved": (_l("Content approved"), None),
    "content.changes_requested": (_l("Changes requested"), None),
    "content.commented": (_l("Comment added"), None),
    "content.word_added": (_l("Forbidden word added"), None),
    "content.word_removed": (_l("Forbidden word removed"), None),
    "content.link_rule_added": (_l("Link rule added"), None),
    "content.link_rule_removed": (_l("Link rule removed"), None),
    "content.template_saved": (_l("Saved as a template"), None),
    "content.image_uploaded": (_l("Image uploaded"), _l("“%(name)s”.")),
    "content.image_deleted": (_l("Image deleted"), _l("“%(name)s”.")),
    "campaign.created": (_l("Campaign created"), _l("“%(name)s”.")),
    "campaign.updated": (_l("Campaign changed"), None),
    "campaign.step_added": (_l("Step added"), _l("Step #%(step)s.")),
    "campaign.step_removed": (_l("Step removed"), _l("Step #%(step)s.")),
    "campaign.step_version_switched": (_l("Step content switched"), _l("Step #%(step)s.")),
    "campaign.step_changed": (_l("Step changed"), _l("Step #%(step)s.")),
    "campaign.step_moved": (_l("Step moved"), _l("Step #%(step)s from place %(from)s to place %(to)s.")),
    "campaign.test_send": (_l("Test send"), _l("Sent to %(to)s.")),
    "campaign.published": (_l("Campaign published"), _l("Starts at %(start_at)s.")),
    "campaign.pause": (_l("Campaign paused"), None),
    "campaign.resumed": (_l("Campaign resumed"), None),
    "campaign.paused": (
        _l("Campaign paused"),
        _l(
            "%(pending)s planned messages wait, %(in_flight)s were being sent, "
            "%(waiting)s contacts hold at their steps."
        ),
    ),
    "campaign.cancel": (_l("Campaign cancelled"), None),
    "campaign.auto_paused": (_l("Campaign paused automatically"), None),
    "campaign.started": (_l("Campaign started"), None),
    "campaign.completed": (_l("Campaign completed"), None),
    "campaign.ab_decided": (_l("A/B test decided"), _l("Winner: %(winner)s.")),
    "campaign.cost_entered": (_l("Cost entered"), _l("Cost %(cost)s, revenue %(revenue)s.")),
    "test_address.added": (_l("Test address added"), _l("%(address)s.")),
    "test_address.removed": (_l("Test address removed"), _l("%(address)s.")),
    "report.requested": (_l("Report requested"), None),
    "report.downloaded": (_l("Report downloaded"), None),
    "report.scheduled": (_l("Report scheduled"), None),
    "report.unscheduled": (_l("Report schedule removed"), None),
}

# Why a sign-in was refused (the audit detail "reason"); anything else is a failed exchange
# with the identity provider, named by the library's exception class.
SIGN_IN_REFUSALS = {
    "missing_claims": _l("the identity provider sent no subject or email address"),
    "no_access": _l("no group of the person maps to a role"),
    "email_taken": _l("another account uses the email address"),
    "deactivated": _l("the account is deactivated"),
    "bad_credentials": _l("wrong email address or password"),
    "stale_reauthentication": _l("the fresh sign-in was too old"),
    "groups_missing": _l("the identity provider sent no groups, so the roles were kept as they were"),
    "groups_overage": _l("the identity provider sent a link to the groups instead of the groups"),
    "provider_unreachable": _l("the identity provider could not be reached"),
    "access_denied": _l("the sign-in was cancelled at the identity provider"),
    "login_required": _l("the identity provider asked for a sign-in"),
    "interaction_required": _l("the identity provider needs the person to act"),
    "consent_required": _l("the identity provider needs the person's consent"),
    "server_error": _l("the identity provider reported an error"),
    "temporarily_unavailable": _l("the identity provider is temporarily unavailable"),
    "locked": _l("the account is locked after too many wrong attempts"),
    "bad_code": _l("wrong or reused code from the authenticator app"),
    "no_second_factor": _l("the identity provider did not confirm a second factor"),
    "not_enrolled": _l("no second factor is set up"),
}

TARGET_KINDS = {
    "user": _l("User #%(id)s"),
    "role": _l("Role %(id)s"),
    "group": _l("Group %(id)s"),
    "contact": _l("Contact #%(id)s"),
    "segment": _l("Segment #%(id)s"),
    "tag": _l("Tag #%(id)s"),
    "tag_rule": _l("Tag rule #%(id)s"),
    "scoring_rule": _l("Scoring rule #%(id)s"),
    "campaign": _l("Campaign #%(id)s"),
    "asset": _l("Content #%(id)s"),
    "version": _l("Content version #%(id)s"),
    "report": _l("Report #%(id)s"),
    "report_schedule": _l("Report schedule #%(id)s"),
    "import": _l("Import #%(id)s"),
    "job": _l("Job #%(id)s"),
    "file": _l("File %(id)s"),
    "api_token": _l("API token %(id)s"),
    "setting": _l("Setting %(id)s"),
    "word": _l("Word %(id)s"),
    "domain": _l("Domain %(id)s"),
    "audit": _l("Audit log"),
}


class _Details(dict):
    """Details as sentence parameters: lists and mappings read as text, missing ones as "—"."""

    def __missing__(self, key: str) -> str:
        return "—"

    def __getitem__(self, key: str) -> str:
        if key not in self:
            return self.__missing__(key)
        return _readable(key, dict.__getitem__(self, key))


def _readable(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, Mapping):  # role grants: {name: source}
        return join_list(label("role", name) for name in sorted(value)) or _("none")
    if key == "amr" and isinstance(value, list | tuple):
        return join_list(label("amr", v) for v in value) or _("none")
    if isinstance(value, list | tuple):
        kind = {"permissions": "permission", "before": None, "after": None, "fields": "import_field"}.get(key)
        if kind is None and value and all(str(v) in PERMISSIONS for v in value):
            kind = "permission"
        if kind is None and value and all(str(v) in ROLES for v in value):
            kind = "role"
        return join_list(label(kind, v) if kind else str(v) for v in value) or _("none")
    if key == "role":
        return label("role", value)
    if key == "reason":
        return str(SIGN_IN_REFUSALS.get(str(value), _("the answer of the identity provider was not valid")))
    if key in ("event", "kind") and str(value) in EVENT_KINDS:
        return label("event", value)
    if key == "channel":
        return label("channel", value)
    if key == "setting":
        return label("setting", value)
    if key == "source":
        return source_label(str(value))
    if key == "via":
        return {"sso": _("company SSO"), "local": _("a local account")}.get(str(value), str(value))
    if key in ("before", "after") and str(value) in CONSENT_STATES:
        return label("consent", value)
    return "—" if value in (None, "") else str(value)


def audit_action_label(action: str) -> str:
    known = AUDIT_ACTIONS.get(action)
    return str(known[0]) if known else action


def audit_sentence(action: str, details: Mapping[str, Any] | None) -> str:
    """The event's details as a sentence in the reader's language ("" when there is nothing to say)."""
    described = audit.describe(action, dict(details or {}))
    if described is not None:
        return described
    known = AUDIT_ACTIONS.get(action)
    if not known or known[1] is None:
        return ""
    return str(known[1]) % _Details(details or {})


def audit_target_label(target: str) -> str:
    kind, _sep, ident = (target or "").partition(":")
    pattern = TARGET_KINDS.get(kind)
    if pattern is None:
        return target
    return str(pattern) % {"id": ident}


def event_sentence(kind: str, properties: Mapping[str, Any] | None) -> str:
    """What an event's properties say, as text (never as JSON)."""
    props = dict(properties or {})
    if kind == "stage_change":
        return _(
            "from %(before)s to %(after)s",
            before=label("stage", props.get("from") or "new"),
            after=label("stage", props.get("to")),
        )
    if kind == "consent_change":
        return _(
            "%(channel)s: %(before)s → %(after)s",
            channel=label("channel", props.get("channel")),
            before=label("consent", props.get("from")),
            after=label("consent", props.get("to")),
        )
    if kind == "mql":
        return _(
            "score %(score)s reached the threshold %(threshold)s",
            score=props.get("score"),
            threshold=props.get("threshold"),
        )
    if kind == "email_open":
        return ""
    # Notes, offline activities, clicks and integration events: their values, plainly.
    shown = [str(v) for k, v in props.items() if k not in ("delivery_id",) and v not in (None, "", [], {})]
    return " · ".join(shown)
