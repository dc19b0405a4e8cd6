"""Sign-in through company SSO, the break-glass local sign-in, sign-out."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from authlib.common.errors import AuthlibBaseError
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user
from joserfc.errors import JoseError
from markupsafe import Markup

from portal.access import SECOND_FACTOR_AT_KEY, SIGNED_IN_AT_KEY, ReauthenticationRequired, public, signed_in
from portal.auth import mfa, oidc, service
from portal.auth.forms import CodeForm, LocalSignInForm, PasswordChangeForm
from portal.auth.models import User
from portal.extensions import limiter, login_manager
from portal.htmx import is_htmx, same_site_path
from portal.models_base import utcnow

bp = Blueprint("auth", __name__)

# Session key: the sign-in under way was asked for to confirm a high-risk action.
REAUTH_KEY = "reauthenticating"
# Session keys of the break-glass sign-in: the account whose password was right and whose code
# is awaited (with when), and the TOTP secret shown at enrolment until a code confirms it.
LOCAL_PENDING_KEY = "local_sign_in_pending"
LOCAL_PENDING_FOR = timedelta(minutes=5)
TOTP_PENDING_KEY = "totp_pending_secret"
# What an OAuth error code may look like (RFC 6749 appendix A.7 allows printable ASCII; real
# providers use lower-case words with underscores).
ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@login_manager.user_loader
def load_signed_in_user(user_id: str) -> User | None:
    """The user read with this request's session row (portal.auth.sessions), else (a user
    signed in during this request) read now."""
    user = getattr(session, "user", None)
    if user is not None and str(user.id) == user_id:
        return user if user.active else None
    return service.load_user(user_id)


login_manager.login_view = "auth.login"
# Flask-Login's "basic" protection only marks a session not fresh when the browser's address or
# agent changes, and nothing here reads freshness: sessions are server-side and revocable, and
# high-risk actions ask for a recent second factor (access.check_step_up). Off, a signed-in page
# depends on the session row alone (portal.kept_pages answers on that).
login_manager.session_protection = None

REFUSAL_MESSAGES = {
    "no_access": _l(
        "Your company account has no access to the marketing portal. Ask your administrator to give you a role."
    ),
    "deactivated": _l("Your account has been deactivated. Ask your administrator if you need access again."),
    "missing_claims": _l("The identity provider did not send your email address. Ask your administrator."),
    "email_taken": _l("Another account already uses your email address. Ask your administrator."),
    "groups_missing": _l(
        "The identity provider did not say which groups you belong to, so the portal cannot tell "
        "what you may do. Please contact your IT department: the portal's sign-in is not fully set up "
        "at the identity provider. Your access has not been changed."
    ),
    "groups_overage": _l(
        "You belong to too many groups for the identity provider to list them in the sign-in, so "
        "the portal cannot tell what you may do. Please contact your IT department: the portal "
        "should receive only the groups assigned to it, or app roles. Your access has not been changed."
    ),
}


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path on this site, else the dashboard."""
    return same_site_path(target, url_for("core.dashboard"))


def _unreachable(detail: str):
    """The provider did not answer: say so (503), with a way to try again, and keep a trace."""
    service.record_failed_sso("provider_unreachable", detail, request.remote_addr or "")
    return render_template("auth/unreachable.html", retry=url_for("auth.sso", next=session.get("after_sign_in"))), 503


def _demo_identities() -> list[dict]:
    if current_app.config["PORTAL_ENV"] != "development":
        return []
    from portal.dev.identities import DEMO_IDENTITIES

    return DEMO_IDENTITIES


@bp.get("/login")
@public
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    return render_template(
        "auth/login.html",
        next=safe_next(request.args.get("next")),
        local_form=LocalSignInForm() if current_app.config["LOCAL_LOGIN"] else None,
        demo_identities=_demo_identities(),
    )


@bp.get("/sso")
@public
def sso():
    session["after_sign_in"] = safe_next(request.args.get("next"))
    reauthenticating = bool(request.args.get("reauth"))
    session[REAUTH_KEY] = reauthenticating
    options = {}
    if reauthenticating:
        # A high-risk action: the provider must ask again, whatever its own session says, and
        # for a second factor (OIDC_MFA_ACR).
        options = oidc.step_up_options()
    try:
        return oidc.start_sign_in(**options)
    except oidc.ProviderUnreachable as exc:
        return _unreachable(str(exc))


@bp.get("/callback")
@public
def callback():
    error = request.args.get("error")
    if error:
        # The provider answered with an error instead of a code (RFC 6749 4.1.2.1). Error codes
        # are ASCII words; anything else in a crafted link is not repeated on the page.
        code = error if ERROR_CODE.fullmatch(error) else "invalid_error_code"
        service.record_failed_sso(code, request.args.get("error_description", "")[:500], request.remote_addr or "")
        retry = url_for("auth.sso", next=session.get("after_sign_in"))
        if code == "access_denied":
            return render_template("auth/cancelled.html", retry=retry), 403
        return render_template("auth/provider_error.html", error_code=code, retry=retry), 400
    try:
        claims, token = oidc.finish_sign_in()
    except oidc.ProviderUnreachable as exc:
        return _unreachable(str(exc))
    except (AuthlibBaseError, JoseError, ValueError) as exc:
        service.record_failed_sso(type(exc).__name__, str(exc), request.remote_addr or "")
        return render_template(
            "auth/refused.html",
            message=_("Sign-in failed: the answer from the identity provider could not be verified. Please try again."),
        ), 400
    now = utcnow()
    authenticated_at = oidc.authenticated_at(claims, now)
    factors = mfa.ProviderFactors.from_claims(claims)
    config = current_app.config
    second_factor = factors.confirm_a_second_factor(config["OIDC_MFA_ACR"], config["OIDC_MFA_AMR"])
    stepping_up = session.pop(REAUTH_KEY, False)
    if stepping_up and not oidc.freshly_authenticated(authenticated_at, now):
        # We asked for prompt=login and max_age=0; an answer without a fresh auth_time means
        # the provider reused its old session, so the identity was not confirmed again.
        service.record_failed_sso(
            "stale_reauthentication",
            f"auth_time={claims.get('auth_time')} acr={factors.acr} amr={factors.amr}",
            request.remote_addr or "",
        )
        return render_template(
            "auth/refused.html",
            message=_(
                "The identity provider did not ask you to sign in again, "
                "so this action cannot go ahead. Please try again."
            ),
        ), 400
    if stepping_up and config["MFA_REQUIRED"] and not second_factor:
        # The person stays signed in as before; only the high-risk action is refused.
        mfa.record_provider_step_up_refused(claims, factors, request.remote_addr or "")
        back = safe_next(session.get("after_sign_in"))
        return render_template(
            "auth/second_factor_refused.html", back=back, retry=url_for("auth.sso", reauth=1, next=back)
        ), 403
    try:
        user = service.sign_in_from_claims(
            claims, current_app.config["OIDC_GROUPS_CLAIM"], address=request.remote_addr or ""
        )
    except service.SignInRefused as refused:
        return render_template("auth/refused.html", message=REFUSAL_MESSAGES.get(refused.reason, refused.reason)), 403
    target = session.pop("after_sign_in", None)
    # The provider's auth_time, when sent, is when the person really authenticated: a token
    # minted from an hour-old provider session is not a recent sign-in for high-risk actions,
    # and its second factor, if any, is as old (without an auth_time, none counts).
    second_factor_at = authenticated_at if second_factor else None
    _start_session(user, authenticated_at or now, second_factor_at)
    session["id_token"] = token.get("id_token")
    if second_factor_at is not None:
        mfa.record_provider_step_up(user, factors, request.remote_addr or "")
    return redirect(safe_next(target))


def _start_session(user, signed_in_at=None, second_factor_at=None) -> None:
    session.regenerate()  # a session id planted before sign-in is worthless after it
    # A CSRF token lives as long as its session: the anonymous one is not carried over.
    session.pop("csrf_token", None)
    session.pop(LOCAL_PENDING_KEY, None)
    g.pop("csrf_token", None)
    login_user(user)
    session[SIGNED_IN_AT_KEY] = (signed_in_at or utcnow()).isoformat()
    if second_factor_at is not None:
        session[SECOND_FACTOR_AT_KEY] = second_factor_at.isoformat()


@bp.post("/logout")
@signed_in
def logout():
    id_token = session.get("id_token")
    service.record_sign_out(current_user._get_current_object())
    logout_user()
    session.clear()
    end_session = oidc.logout_url(id_token)
    if end_session:
        # RP-initiated logout: the provider's session ends too, then it sends the browser back
        # to the registered post-logout URL.
        return redirect(end_session, code=303)
    return redirect(url_for("auth.login"), code=303)


def _local_login_allowed() -> None:
    if not current_app.config["LOCAL_LOGIN"]:
        abort(404)


@bp.route("/local", methods=["GET", "POST"])
@public
@limiter.limit("10 per minute;50 per hour", methods=["POST"])
def local_login():
    _local_login_allowed()
    form = LocalSignInForm()
    if form.validate_on_submit():
        try:
            user = service.sign_in_locally(form.email.data, form.password.data, address=request.remote_addr or "")
        except service.SignInRefused:
            # One answer for every refusal (wrong password, unknown, locked, deactivated): the
            # form must not tell which break-glass addresses exist.
            flash(_("Wrong email or password, or the account is deactivated or locked."), "error")
        else:
            if user.has_second_factor:
                # Not signed in yet: the code from the authenticator app comes next.
                session[LOCAL_PENDING_KEY] = {"user_id": user.id, "at": utcnow().isoformat()}
                return redirect(url_for("auth.local_code", next=safe_next(request.args.get("next"))), code=303)
            _start_session(user)
            if user.must_change_password:
                return redirect(url_for("auth.change_password"), code=303)
            return redirect(url_for("auth.two_factor"), code=303)
    return render_template("auth/local.html", form=form), 422 if form.is_submitted() else 200


def _pending_local_user() -> int | None:
    pending = session.get(LOCAL_PENDING_KEY) or {}
    try:
        started = datetime.fromisoformat(pending["at"])
        user_id = int(pending["user_id"])
    except (KeyError, TypeError, ValueError):
        return None
    return user_id if utcnow() - started <= LOCAL_PENDING_FOR else None


@bp.route("/local/code", methods=["GET", "POST"])
@public
@limiter.limit("10 per minute;50 per hour", methods=["POST"])
def local_code():
    """The break-glass sign-in's second step: the code from the authenticator app."""
    _local_login_allowed()
    user_id = _pending_local_user()
    if user_id is None:
        session.pop(LOCAL_PENDING_KEY, None)
        flash(_("Please enter your email and password again."), "warning")
        return redirect(url_for("auth.local_login", next=safe_next(request.args.get("next"))))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            user = service.finish_local_sign_in(user_id, form.code.data, address=request.remote_addr or "")
        except service.SignInRefused as refused:
            if refused.reason != "bad_code":  # locked or deactivated: start again from the password
                session.pop(LOCAL_PENDING_KEY, None)
            flash(_("Wrong code, or the account is deactivated or locked."), "error")
        else:
            now = utcnow()
            _start_session(user, now, now)
            if user.must_change_password:
                return redirect(url_for("auth.change_password"), code=303)
            return redirect(safe_next(request.args.get("next")), code=303)
    return render_template("auth/local_code.html", form=form), 422 if form.is_submitted() else 200


@bp.route("/two-factor", methods=["GET", "POST"])
@signed_in
def two_factor():
    """The break-glass account enrols its authenticator app (after its first password change),
    then sees its recovery codes, once."""
    user = current_user._get_current_object()
    if not user.is_local:
        abort(404)
    if user.has_second_factor:
        return render_template("auth/two_factor.html", enrolled=True, remaining=mfa.remaining_recovery_codes(user.id))
    secret = session.get(TOTP_PENDING_KEY)
    if not secret:
        secret = session[TOTP_PENDING_KEY] = mfa.new_totp_secret()
    form = CodeForm()
    if form.validate_on_submit():
        try:
            codes = mfa.enrol_totp(user, secret, form.code.data)
        except mfa.SecondFactorRefused:
            form.code.errors = [_("That code is not the one the app shows now. Check the phone's clock and try again.")]
        else:
            session.pop(TOTP_PENDING_KEY, None)
            # The code just given is a second factor confirmed now.
            session[SECOND_FACTOR_AT_KEY] = utcnow().isoformat()
            return render_template("auth/recovery_codes.html", codes=codes)
    uri = mfa.provisioning_uri(secret, user.email)
    return render_template(
        "auth/two_factor.html",
        enrolled=False,
        form=form,
        secret=secret,
        qr_code=Markup(mfa.qr_code_svg(uri, _("QR code for your authenticator app"))),  # noqa: S704 - segno's own SVG
    ), 422 if form.is_submitted() else 200


@bp.route("/confirm", methods=["GET", "POST"])
@signed_in
@limiter.limit("10 per minute;50 per hour", methods=["POST"])
def confirm_code():
    """The break-glass administrator confirms a high-risk action with a code, then goes back."""
    user = current_user._get_current_object()
    if not user.is_local:
        return redirect(url_for("auth.sso", reauth=1, next=safe_next(request.args.get("next"))))
    form = CodeForm()
    if form.validate_on_submit():
        try:
            service.confirm_local_step_up(user, form.code.data, address=request.remote_addr or "")
        except mfa.SecondFactorRefused:
            flash(_("Wrong code, or the account is deactivated or locked."), "error")
        else:
            session[SECOND_FACTOR_AT_KEY] = utcnow().isoformat()
            return redirect(safe_next(request.args.get("next")), code=303)
    return render_template("auth/confirm_code.html", form=form), 422 if form.is_submitted() else 200


@bp.route("/password", methods=["GET", "POST"])
@signed_in
def change_password():
    form = PasswordChangeForm()
    if form.validate_on_submit():
        try:
            service.change_local_password(
                current_user._get_current_object(),
                form.current.data,
                form.new.data,
                keep_session_id=getattr(session, "session_id", None),
            )
        except service.PasswordRejected as exc:
            form.new.errors = [str(exc)]
        else:
            flash(_("Your password has been changed."), "success")
            if not current_user.has_second_factor:
                return redirect(url_for("auth.two_factor"), code=303)
            return redirect(url_for("core.dashboard"), code=303)
    return render_template("auth/password.html", form=form), 422 if form.is_submitted() else 200


# What a break-glass account that is not fully set up may still open.
SET_UP_ENDPOINTS = ("auth.change_password", "auth.two_factor", "auth.logout", "static", "core.set_locale")


@bp.before_app_request
def force_local_set_up():
    """The break-glass account must replace its one-time password, then enrol its second
    factor, before anything else."""
    reader = current_user._get_current_object()
    if not reader.is_authenticated or not reader.is_local or request.endpoint in SET_UP_ENDPOINTS:
        return None
    if reader.must_change_password:
        target = url_for("auth.change_password")
    elif not reader.has_second_factor:
        target = url_for("auth.two_factor")
    else:
        return None
    if is_htmx():
        # A 302 would swap the password page into the middle of another page.
        response = make_response("", 403)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def reauthenticate(next_url: str):
    """The answer that sends the person through sign-in again, then back to `next_url`.

    SSO users go to the provider with prompt=login, max_age=0 and OIDC_MFA_ACR (the callback
    insists on a fresh auth_time and a second factor); the break-glass account confirms with a
    code from its authenticator app. htmx requests get an
    HX-Redirect, never a page swapped into the current one. Views that catch
    `ReauthenticationRequired` themselves return this; uncaught, the error handler below does."""
    if getattr(current_user, "is_local", False):
        target = url_for("auth.confirm_code", next=safe_next(next_url))
    else:
        target = url_for("auth.sso", reauth=1, next=safe_next(next_url))
    if is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = target
        return response
    flash(_("For this action, please confirm your identity with your second factor."), "warning")
    return redirect(target)


@bp.app_errorhandler(ReauthenticationRequired)
def on_reauthentication_required(_error):
    """High-risk actions need a fresh sign-in: send the person through it, then back to the
    page they were on (for a POST, the page the form was on)."""
    back = request.full_path.rstrip("?") if request.method == "GET" else urlsplit(request.referrer or "/").path
    return reauthenticate(back)
