"""The marketing portal: `create_app` wires configuration, extensions, blueprints, CLI
commands and error pages, once per process."""

from __future__ import annotations

import os
import select
from pathlib import Path
from typing import Any

from flask import Flask
from redis import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from portal import errors, kept_pages, labels, navigation, security
from portal.access import public
from portal.auth import sessions
from portal.config import load_config
from portal.extensions import babel, csrf, db, limiter, login_manager, migrate
from portal.locales import select_locale

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    # A host of its own may keep its instance folder (instance/config.py, local files) elsewhere.
    instance_path = os.environ.get("PORTAL_INSTANCE_PATH") or None
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config.update(load_config(app.instance_path, config))
    Path(app.config["STORAGE_DIR"]).mkdir(parents=True, exist_ok=True)

    db.init_app(app)
    with app.app_context():
        _tune_sqlite(db.engine)
        check_pooled_connections(db.engine)
        sessions.watch_writes(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    csrf.init_app(app)
    limiter.init_app(app)
    _limit_only_where_declared(app)
    login_manager.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    _register_sessions_and_sso(app)
    security.register(app)
    app.extensions["redis"] = Redis.from_url(app.config["REDIS_URL"], health_check_interval=30)

    _register_models()
    _register_blueprints(app)
    errors.register(app)
    navigation.register(app)
    labels.register(app)
    _register_cli(app)

    app.wsgi_app = kept_pages.KeptPagesTier(app, app.wsgi_app)
    _answer_tracking_first(app)

    # Flask's own static route is open to everyone, like the sign-in page.
    app.view_functions["static"] = public(app.view_functions["static"])

    return app


def _answer_tracking_first(app: Flask) -> None:
    """The open pixel and the click redirect skip every hook of the portal's pages."""
    from portal.delivery.tracking_app import TrackingApp

    app.wsgi_app = TrackingApp(app, app.wsgi_app)


def _limit_only_where_declared(app: Flask) -> None:
    """The portal's rate limits are on the routes that need them (`@limiter.limit`), which check
    their own; the limiter's check before every other request looks for application-wide
    limits there are none of, and costs about as much as a whole hello-world request."""
    if app.config.get("RATELIMIT_APPLICATION") or app.config.get("RATELIMIT_DEFAULT"):
        return
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if getattr(hook, "__self__", None) is not limiter]


def check_pooled_connections(engine: Engine) -> None:
    """Before a pooled PostgreSQL connection is handed out, make sure the server has not closed
    it (a restart, an idle timeout, a terminated backend) without asking the server: a closed
    connection has its socket readable (the server's goodbye, or end of file), an idle live one
    never does. The pool then replaces it and the request goes on, where SQLAlchemy's
    `pool_pre_ping` would pay a round trip on every checkout to learn the same."""
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, _record, _proxy):
        if dbapi_connection.closed or select.select([dbapi_connection.fileno()], [], [], 0)[0]:
            raise DisconnectionError("the server closed this pooled connection")


def _tune_sqlite(engine: Engine) -> None:
    """Let the web app and the worker share one SQLite file safely."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _register_sessions_and_sso(app: Flask) -> None:
    from portal.auth import oidc
    from portal.auth.sessions import DatabaseSessionInterface

    app.session_interface = DatabaseSessionInterface()
    oidc.register(app)


def _register_models() -> None:
    """Import every models module so that metadata (and Alembic) sees all tables."""
    import portal.audience.models
    import portal.audit
    import portal.auth.models
    import portal.campaigns.models
    import portal.content.models
    import portal.delivery.models
    import portal.notify
    import portal.queue
    import portal.reports.models
    import portal.settings
    import portal.storage  # noqa: F401


def _register_blueprints(app: Flask) -> None:
    from portal.admin.views import bp as admin_bp
    from portal.audience.api import bp as api_bp
    from portal.audience.views import bp as audience_bp
    from portal.auth.views import bp as auth_bp
    from portal.campaigns.views import bp as campaigns_bp
    from portal.content.views import bp as content_bp
    from portal.content.views import media_bp
    from portal.core.views import bp as core_bp
    from portal.delivery.views import bp as delivery_bp
    from portal.reports.views import bp as reports_bp

    app.register_blueprint(core_bp)
    app.register_blueprint(auth_bp, url_prefix="/auth")
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(content_bp, url_prefix="/content")
    app.register_blueprint(media_bp)
    app.register_blueprint(audience_bp, url_prefix="/audience")
    app.register_blueprint(campaigns_bp, url_prefix="/campaigns")
    app.register_blueprint(reports_bp, url_prefix="/reports")
    app.register_blueprint(api_bp)
    app.register_blueprint(delivery_bp)
    if app.config["OUTBOX_DIR"]:
        from portal.dev.views import bp as outbox_bp

        app.register_blueprint(outbox_bp, url_prefix="/outbox")


def _register_cli(app: Flask) -> None:
    from portal.cli import register_commands

    register_commands(app)
