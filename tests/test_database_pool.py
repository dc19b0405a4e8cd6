"""Pooled PostgreSQL connections that the server has closed are replaced before use, without a
round trip on every request: a restarted database never shows anyone an error page."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text


def test_a_page_after_the_database_closed_every_pooled_connection(app, client, login_as):
    from portal.extensions import db

    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("SQLite has no server to close connections")
    login_as("marketing_manager")
    assert client.get("/").status_code == 200
    statements = []

    def note(_connection, _cursor, statement, *_args):
        statements.append(statement)

    with app.app_context():
        engine = db.engine
        event.listen(engine, "before_cursor_execute", note)
        try:
            assert client.get("/").status_code == 200
            assert not [s for s in statements if s.strip().upper() == "SELECT 1"]  # no ping
            # With a timeout, pg_terminate_backend waits until each backend has exited and so
            # closed its socket, as every connection of a restarted server has.
            with engine.connect() as connection:
                closed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            assert closed >= 1
            for _ in range(3):
                assert client.get("/").status_code == 200
        finally:
            event.remove(engine, "before_cursor_execute", note)
