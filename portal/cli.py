"""Flask CLI commands: `flask --app wsgi <command>`."""

from __future__ import annotations

import click
from flask import Flask
from flask_migrate import upgrade


def register_commands(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Apply migrations and create or update the built-in roles."""
        from portal.admin.service import ensure_builtin_roles

        upgrade()
        ensure_builtin_roles()
        click.echo("database ready")

    @app.cli.command("demo-data")
    def demo_data() -> None:
        """Load the demo data (safe to run again)."""
        from portal.demo import load_demo_data

        load_demo_data()
        click.echo("demo data loaded")
