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

    @app.cli.command("import-storage-folder")
    @click.argument("folder", required=False)
    def import_storage_folder(folder: str | None) -> None:
        """Copy the files of the folder backend (default STORAGE_DIR) into the database."""
        from pathlib import Path

        from portal.storage import import_folder

        copied = import_folder(Path(folder or app.config["STORAGE_DIR"]))
        click.echo(f"{len(copied)} files copied into the database")

    @app.cli.command("demo-data")
    def demo_data() -> None:
        """Load the demo data (safe to run again)."""
        from portal.demo import load_demo_data

        load_demo_data()
        click.echo("demo data loaded")

    @app.cli.command("create-admin")
    @click.argument("email")
    def create_admin(email: str) -> None:
        """Create the break-glass local administrator; prints a one-time password."""
        from portal.auth.service import create_local_admin

        try:
            user, password = create_local_admin(email)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"Local administrator {user.email} created.")
        click.echo(f"One-time password (shown once, must be changed at first sign-in): {password}")

    @app.cli.command("rebuild-report-rollups")
    def rebuild_report_rollups() -> None:
        """Count the whole ledger into the reports' rollups again (after adding a dimension)."""
        from portal.reports.rollups import rebuild

        click.echo(f"{rebuild()} contacts counted")
