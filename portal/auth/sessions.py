"""Server-side sessions: the cookie holds a random id, the data lives in `web_sessions`.

Flask's default cookie session cannot be revoked; this one can. Signing out, deactivating a
user or removing their last role deletes their rows, and a replayed cookie then finds nothing.
Sessions end after SESSION_IDLE_MINUTES without a request, or SESSION_ABSOLUTE_HOURS after
they began, whichever comes first.

Only signed-in sessions get a row. What an anonymous visitor's session holds (the CSRF token of
the sign-in page, the language picked, the sign-in under way) travels in a signed cookie, so
that anonymous requests cannot fill the table; at sign-in it moves into a row under a new id."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple

from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Select, Text, bindparam, cast, delete, event, insert, inspect, select, update
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import make_transient_to_detached
from werkzeug.datastructures import CallbackDict

from portal import notify
from portal.access import Permission
from portal.auth.models import Role, User, WebSession, permissions_of, user_roles
from portal.extensions import db
from portal.models_base import utcnow

# Writing last_seen_at on every request would make every page view a write.
TOUCH_INTERVAL = timedelta(minutes=1)


# A signed anonymous payload always has dots; a session id (token_urlsafe) never does.
ANONYMOUS_MARK = "."
ANONYMOUS_SALT = "anonymous-session"


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ServerSession(CallbackDict, SessionMixin):
    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        session_id: str | None = None,
        created_at=None,
        last_seen_at=None,
        user: Any = None,
    ):
        def on_update(_self):
            _self.modified = True

        super().__init__(initial or {}, on_update)
        self.session_id = session_id
        self.created_at = created_at
        self.last_seen_at = last_seen_at
        self.modified = False
        self.replaced_id: str | None = None
        # The user read with the row: held for the request, so that the ORM's identity map
        # (which holds its objects weakly) still has it when the user loader asks.
        self.user = user

    def regenerate(self) -> None:
        """Give the session a new id (at sign-in), so that an id planted before sign-in is useless."""
        if self.session_id:
            self.replaced_id = self.session_id
        self.session_id = None
        self.created_at = None
        self.modified = True


class DatabaseSessionInterface(SessionInterface):
    @staticmethod
    def _anonymous_serializer(app: Flask) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(app.secret_key, salt=ANONYMOUS_SALT)

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        session_id = request.cookies.get(self.get_cookie_name(app))
        if not session_id:
            return ServerSession()
        if ANONYMOUS_MARK in session_id:
            try:
                data = self._anonymous_serializer(app).loads(
                    session_id, max_age=app.config["SESSION_IDLE_MINUTES"] * 60
                )
            except BadSignature:
                return ServerSession()
            # Never a signed-in session without a row: a user id here is ignored.
            data.pop("_user_id", None)
            return ServerSession(data)
        found = read_signed_in(request.environ, session_id)
        if found is None or expired(app, found, utcnow()):
            return ServerSession()
        user = _user_of(found)
        return ServerSession(dict(found.data), session_id, found.created_at, found.last_seen_at, user)

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:  # type: ignore[override]
        # Its own transaction: saving the session must never commit a view's unfinished work.
        name = self.get_cookie_name(app)
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        now = utcnow()
        table = WebSession.__table__
        if not session or not session.get("_user_id"):
            ended = [i for i in (session.replaced_id, session.session_id) if i]
            if ended:
                with db.engine.begin() as connection:
                    connection.execute(delete(table).where(table.c.id_hash.in_([_hash(i) for i in ended])))
                session.session_id = None
            self._save_anonymous(app, session, response)
            return
        touch = session.last_seen_at is None or due_touch(session.last_seen_at, now)
        if not (session.modified or touch or session.session_id is None):
            return  # nothing to write: most requests take no connection here
        values = {
            "data": dict(session),
            "user_id": int(session["_user_id"]),
            "last_seen_at": now,
        }
        with db.engine.begin() as connection:
            if session.replaced_id:
                connection.execute(delete(table).where(table.c.id_hash == _hash(session.replaced_id)))
            if session.session_id is None:
                session.session_id = secrets.token_urlsafe(32)
                connection.execute(insert(table).values(id_hash=_hash(session.session_id), created_at=now, **values))
            else:
                updated = connection.execute(
                    update(table).where(table.c.id_hash == _hash(session.session_id)).values(**values)
                )
                if updated.rowcount == 0:  # revoked while this request ran: never bring it back
                    response.delete_cookie(name, domain=domain, path=path)
                    return
        self._set_cookie(app, response, session.session_id)

    def _save_anonymous(self, app: Flask, session: ServerSession, response: Response) -> None:
        name = self.get_cookie_name(app)
        if not session:
            if name in _request_cookies():
                response.delete_cookie(name, domain=self.get_cookie_domain(app), path=self.get_cookie_path(app))
            return
        if not session.modified and session.session_id is None and name in _request_cookies():
            return  # unchanged: the cookie the browser holds is still good
        self._set_cookie(app, response, self._anonymous_serializer(app).dumps(dict(session)))

    def _set_cookie(self, app: Flask, response: Response, value: str) -> None:
        response.set_cookie(
            self.get_cookie_name(app),
            value,
            httponly=self.get_cookie_httponly(app),
            secure=self.get_cookie_secure(app),
            samesite=self.get_cookie_samesite(app),
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            # A browser-session cookie: the server decides when the session ends.
        )
        response.vary.add("Cookie")


class SignedIn(NamedTuple):
    """A session row as read with what every signed-in page needs next (_signed_in_query)."""

    data: dict[str, Any]
    created_at: Any
    last_seen_at: Any
    unread: int  # the user's unread notifications, for the header
    user: Mapping[str, Any] | None  # the user's columns by name; None when the user is gone
    permissions: frozenset[Permission]  # what the user's roles give


def expired(app: Flask, found: SignedIn, now) -> bool:
    idle = timedelta(minutes=app.config["SESSION_IDLE_MINUTES"])
    absolute = timedelta(hours=app.config["SESSION_ABSOLUTE_HOURS"])
    return now - found.last_seen_at > idle or now - found.created_at > absolute


def due_touch(last_seen_at, now) -> bool:
    """Whether a request now should write the session's last_seen_at."""
    return now - last_seen_at > TOUCH_INTERVAL


@cache
def _signed_in_query() -> Select:
    """Built once (the first time it is needed, when the models are all mapped): building and
    keying a statement of this size cost more than running it. Plain columns, one row per
    role: the ORM's loading of three entities cost more than the round trip. Every column of
    the user is read, so that the user comes whole (but for its roles, which load on first
    access) and never needs the database before the request's ORM session is made; of the
    roles only their permissions, as JSON text, from which _permissions makes the user's."""
    sessions, users, roles = WebSession.__table__, User.__table__, Role.__table__
    return (
        select(
            cast(sessions.c.data, Text).label("data"),
            sessions.c.created_at,
            sessions.c.last_seen_at,
            notify.unread_count_of(sessions.c.user_id).label("unread"),
            *(column.label(f"user_{column.key}") for column in users.c),
            cast(roles.c.permissions, Text).label("role_permissions"),
        )
        .select_from(
            sessions.outerjoin(users, users.c.id == sessions.c.user_id)
            .outerjoin(user_roles, user_roles.c.user_id == users.c.id)
            .outerjoin(roles, roles.c.id == user_roles.c.role_id)
        )
        .where(sessions.c.id_hash == bindparam("id_hash"))
    )


class _DriverStatement(NamedTuple):
    """A statement compiled once for one dialect, to run on the driver's own cursor."""

    sql: str
    binds: tuple[str, ...] | None  # the parameters' order, for drivers that take them by position
    names: tuple[str, ...]
    processors: tuple[Any, ...]  # SQLAlchemy's conversion of each column's value, or None


@lru_cache(maxsize=8)
def _compiled(dialect: Dialect) -> _DriverStatement:
    statement = _signed_in_query()
    compiled = statement.compile(dialect=dialect)
    columns = list(statement.selected_columns)
    return _DriverStatement(
        str(compiled),
        tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None,
        tuple(statement.selected_columns.keys()),
        tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns),
    )


def _read_rows(id_hash: str) -> list[dict[str, Any]]:
    """The rows of _signed_in_query, run on a pooled connection's driver cursor: SQLAlchemy's
    execution of it (result set-up, isolation level set and reset through the engine) cost
    twice the round trip itself, on every signed-in request. The values pass through the same
    type conversions as SQLAlchemy's own results."""
    engine = db.engine
    statement = _compiled(engine.dialect)
    params: Any = {"id_hash": id_hash}
    if statement.binds is not None:
        params = tuple(params[name] for name in statement.binds)
    connection = engine.raw_connection()
    try:
        driver = connection.driver_connection
        autocommit = engine.dialect.name == "postgresql"
        if autocommit:
            # One statement is its own snapshot: no BEGIN before it and no ROLLBACK after.
            driver.autocommit = True
        cursor = driver.cursor()
        try:
            cursor.execute(statement.sql, params)
            found = cursor.fetchall()
        except Exception as error:
            if engine.dialect.is_disconnect(error, driver, cursor):
                connection.invalidate(error)
            raise
        finally:
            cursor.close()
            if autocommit and not driver.closed:
                driver.autocommit = False
    finally:
        connection.close()
    return [
        {
            name: value if process is None else process(value)
            for name, process, value in zip(statement.names, statement.processors, row, strict=True)
        }
        for row in found
    ]


# Where a request's environ carries the session read for it (by the kept-pages tier, which
# reads it before Flask does), so that the request's session is read once.
READ_KEY = "portal.signed_in"


def read_signed_in(environ: dict[str, Any], session_id: str) -> SignedIn | None:
    """The session `session_id` names, read in ONE round trip with what every signed-in page
    needs next: its user's columns, their roles' permissions and their unread notification
    count. Everything is read afresh on every request Flask answers, so a revoked session, a
    deactivated user or a changed role takes effect at once (for a kept page: recent_signed_in).
    A second call for the same request (`environ`) answers what the first one read."""
    id_hash = _hash(session_id)
    handed_over = environ.get(READ_KEY)
    if handed_over is not None and handed_over[0] == id_hash:
        return handed_over[1]
    rows = _read_rows(id_hash)
    found = None
    if rows:
        first = rows[0]
        user = None if first["user_id"] is None else {key: first[f"user_{key}"] for key in _user_columns()}
        granted = tuple(row["role_permissions"] for row in rows if row["role_permissions"] is not None)
        found = SignedIn(
            json.loads(first["data"]),
            first["created_at"],
            first["last_seen_at"],
            first["unread"],
            user,
            _permissions(granted),
        )
    environ[READ_KEY] = (id_hash, found)
    return found


# A kept page, which only shows, may be answered from a read of its session that this process
# made at most this long ago, unless this process has written since to anything the read shows
# (_WrittenSince). A write by another process (another web process signing someone out or
# changing a role, a worker's notification) shows on such a page within this time; everywhere
# else, and after a write by this process, at once. For twenty people reading the dashboard,
# the read of their session was a third of each request's work, and most of the database's.
RECENT_READ_SECONDS = 1.0
_RECENT_READS = 1024
# What a read of a signed-in session shows (_signed_in_query).
_SHOWN_TABLES = frozenset({"web_sessions", "users", "roles", "user_roles", "notifications"})


class _RecentRead(NamedTuple):
    read_at: float  # time.monotonic()
    writes_seen: int  # _written.count when the read began
    found: SignedIn


class _WrittenSince:
    """Counts the transactions of this process that wrote to _SHOWN_TABLES, each when it has
    committed: a read begun before the count moved may show what has changed since."""

    def __init__(self) -> None:
        self.count = 0
        self._guard = threading.Lock()

    def note(self) -> None:
        with self._guard:
            self.count += 1


_written = _WrittenSince()
_recent_reads: dict[str, _RecentRead] = {}
_recent_reads_guard = threading.Lock()  # for its writers: a reader takes one entry, which is whole
# On a pooled connection's info: it ran a statement that may change what a session read shows.
_WROTE_SHOWN = "portal.wrote_signed_in"


def recent_signed_in(environ: dict[str, Any], session_id: str) -> SignedIn | None:
    """The session `session_id` names as read_signed_in reads it, or as it was read at most
    RECENT_READ_SECONDS ago by this process with no write of this process since. For a page
    that only shows (the kept-pages tier): only a fresh read is handed on to Flask."""
    id_hash = _hash(session_id)
    kept = _recent_reads.get(id_hash)
    writes_seen = _written.count
    if kept is not None and kept.writes_seen == writes_seen and time.monotonic() - kept.read_at <= RECENT_READ_SECONDS:
        return kept.found
    read_at = time.monotonic()
    found = read_signed_in(environ, session_id)
    if found is not None and _written.count == writes_seen:
        # Its own copy: the request that reads on may change its session's data in place.
        kept = _RecentRead(read_at, writes_seen, found._replace(data=copy.deepcopy(found.data)))
        with _recent_reads_guard:
            _recent_reads.pop(id_hash, None)
            while len(_recent_reads) >= _RECENT_READS:
                _recent_reads.pop(next(iter(_recent_reads)), None)
            _recent_reads[id_hash] = kept
    return found


def watch_writes(engine: Engine) -> None:
    """Have `engine` note (in _written) each transaction that wrote to what a session read
    shows, once it has committed: at its connection's return to the pool, which follows the
    commit (and at the commit itself, for a connection that is kept). Every statement of this
    process passes here, whoever runs it, so none is missed; one that may write but does not
    say where (SQL text) counts as a write."""

    @event.listens_for(engine, "after_cursor_execute")
    def _on_execute(connection, _cursor, statement, _parameters, context, _executemany):
        if _may_change_what_reads_show(statement, context):
            connection.info[_WROTE_SHOWN] = True

    @event.listens_for(engine, "commit")
    def _on_commit(connection):
        if connection.info.get(_WROTE_SHOWN):
            _written.note()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        if record.info.pop(_WROTE_SHOWN, False):
            _written.note()

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection, record, _exception):
        if record.info.pop(_WROTE_SHOWN, False):
            _written.note()


def _may_change_what_reads_show(statement: str, context: Any) -> bool:
    if context.isinsert or context.isupdate or context.isdelete:
        table = getattr(context.compiled.statement, "table", None)
        return table is None or getattr(table, "name", None) in _SHOWN_TABLES
    if context.isddl:
        return True
    if context.compiled is not None and getattr(context.compiled.statement, "is_select", False):
        return False
    # SQL text, or a statement that says nothing of its kind (a savepoint): by its first word.
    return not statement.lstrip()[:6].upper().startswith(("SELECT", "PRAGMA", "SHOW"))


@cache
def _user_columns() -> tuple[str, ...]:
    return tuple(User.__table__.c.keys())


def _user_of(found: SignedIn) -> User | None:
    """The session's user as the request's object (see _detached_user), its unread count kept
    for the header (notify.remember_unread)."""
    if found.user is None:
        return None
    notify.remember_unread(found.user["id"], found.unread)
    user = _detached_user(found.user)
    # Where functools.cached_property keeps its value: as User.permissions would compute it.
    user.__dict__["permissions"] = found.permissions
    return user


@lru_cache(maxsize=256)
def _permissions(granted: tuple[str, ...]) -> frozenset[Permission]:
    """The permissions that roles' lists of names (JSON text, as read) give: the same few lists
    come back on every request."""
    return permissions_of(json.loads(names) for names in granted)


def _detached_user(columns: Mapping[str, Any]) -> User:
    """The user whose columns `columns` holds (by column name), as a query would have loaded
    it, but in no ORM session yet: a persistent object between sessions (SQLAlchemy's
    "detached"). The request's ORM session takes it in when it is made (extensions.RequestSession),
    so that everything that reads or changes the user through the ORM finds this one object; a
    page that needs no ORM session (a kept dashboard) then never pays for making one. An ORM
    session made before the request (a test's application context) takes it in now, or gives
    the object it already holds for that user."""
    mapper = inspect(User)
    user = mapper.class_manager.new_instance()
    user.__dict__.update({prop.key: columns[prop.columns[0].key] for prop in mapper.column_attrs})
    make_transient_to_detached(user)
    if not db.session.registry.has():
        return user
    held = db.session.identity_map.get(inspect(user).key)
    if held is not None:
        return held
    db.session.add(user)
    return user


def _request_cookies():
    return request.cookies


def end_sessions_of(user_id: int, except_session_id: str | None = None) -> int:
    """End every session of the user (but the one `except_session_id` names), in the caller's
    transaction; returns how many ended."""
    statement = delete(WebSession).where(WebSession.user_id == user_id)
    if except_session_id:
        statement = statement.where(WebSession.id_hash != _hash(except_session_id))
    return db.session.execute(statement).rowcount or 0


def purge_expired_sessions(idle_minutes: int, absolute_hours: int) -> int:
    now = utcnow()
    result = db.session.execute(
        delete(WebSession).where(
            (WebSession.last_seen_at < now - timedelta(minutes=idle_minutes))
            | (WebSession.created_at < now - timedelta(hours=absolute_hours))
        )
    )
    db.session.commit()
    return result.rowcount or 0
