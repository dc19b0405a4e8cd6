"""The reader's language: the portal speaks Simplified Chinese and English."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale
from flask import current_app, has_request_context, request, session
from flask_login import current_user
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

# The portal's languages, parsed once: Flask-Babel parses what the selector returns on every
# request unless it is a Locale already.
LOCALES = {name: Locale.parse(name) for name in ("zh_CN", "en")}


def select_locale() -> Locale:
    """The reader's language (choose_locale). Outside a request (jobs, commands) the portal's
    default language."""
    if not has_request_context():
        return Locale.parse(current_app.config["BABEL_DEFAULT_LOCALE"])
    user_locale = getattr(current_user._get_current_object(), "locale", None)
    return choose_locale(user_locale, session.get("locale"), request.headers.get("Accept-Language", ""))


def choose_locale(user_locale: str | None, session_locale: str | None, accept_language: str) -> Locale:
    """The user's saved language, else the one picked this session, else the browser's
    Accept-Language."""
    if user_locale in LOCALES:
        return LOCALES[user_locale]
    if session_locale in LOCALES:
        return LOCALES[session_locale]
    return _browser_locale(accept_language)


@lru_cache(maxsize=256)
def _browser_locale(accept_language: str) -> Locale:
    """Parsed once per distinct header: browsers send the same few over and over."""
    best = parse_accept_header(accept_language, LanguageAccept).best_match(["zh-CN", "zh", "en"])
    return LOCALES["en" if best == "en" else "zh_CN"]
