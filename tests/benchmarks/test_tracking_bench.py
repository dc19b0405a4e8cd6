"""The tracking endpoints under load: the open pixel and the click redirect, served the README's
way (gunicorn, 2 workers x 4 threads) on the benchmark database, against a Flask hello world
answering the same GIF and the same kind of redirect under the same settings, in the same run.
Load from `wrk` with 20 connections (tests/benchmarks/load.py).

The requests carry real signed tokens of real deliveries (a generated campaign; the first open
of each delivery also writes its ledger row, which the report rollups' trigger notes). The
endpoints hand their events to the tracking intake (a Redis stream); while wrk runs, the
intake's writer runs beside them as its periodic job would (every two seconds), so that its
cost is in the figures. Goal: each endpoint answers at least half the hello world's requests/s.
After the run and the last write, every answered request has left its event: the events
recorded are at least the requests answered, and at most that plus the requests still in flight
when wrk stopped. Prints p99 with p50 and p95, the endpoint's own cost in process (one request
at a time) and the writer's cost per 1,000 events."""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select, text

from tests.benchmarks.conftest import report
from tests.benchmarks.load import CONNECTIONS, PATHS_FROM_FILE, gunicorn, load_average, wrk
from tests.benchmarks.test_report_bench import _generate
from tests.conftest import free_port

DELIVERIES = 40_000
GOAL_RATIO = 0.5
IN_PROCESS = 500


def _events(app, kind: str) -> int:
    from portal.audience.models import ContactEvent
    from portal.extensions import db

    with app.app_context():
        count = db.session.scalar(select(func.count()).where(ContactEvent.kind == kind))
        db.session.remove()
    return count or 0


@contextmanager
def _writer(app):
    """The intake's periodic job, in a thread: writes what was taken every two seconds; on
    leaving, writes the rest. Yields the seconds spent writing (elapsed, and on the writing
    thread's CPU) and the entries written."""
    from portal.delivery import intake
    from portal.extensions import db

    stop = threading.Event()
    spent = {"seconds": 0.0, "cpu_seconds": 0.0, "entries": 0}

    def write() -> None:
        with app.app_context():
            started, cpu_started = time.perf_counter(), time.thread_time()
            spent["entries"] += intake.flush()
            spent["seconds"] += time.perf_counter() - started
            spent["cpu_seconds"] += time.thread_time() - cpu_started
            db.session.remove()

    def run() -> None:
        while not stop.wait(2):
            write()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield spent
    finally:
        stop.set()
        thread.join()
        write()


def test_open_pixel_and_click_redirect_keep_up_with_a_hello_world(app, make_user, worker_env, tmp_path):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    from portal.delivery.tokens import tracking_tokens
    from portal.extensions import db

    campaign_id = _generate(app, make_user, rows=DELIVERIES)
    with app.app_context():
        recipients = db.session.execute(
            text("SELECT id, contact_id FROM deliveries WHERE campaign_id = :c AND status = 'sent' ORDER BY id"),
            {"c": campaign_id},
        ).all()
        db.session.remove()
    tokens = tracking_tokens(app)
    link = tokens.link_token("https://www.example.com/offer")
    opens = [f"/t/o/{tokens.open_token(d, c)}.gif" for d, c in recipients]
    clicks = [f"/t/c/{tokens.click_token(d, c)}/{link}" for d, c in reversed(recipients)]
    (tmp_path / "opens.txt").write_text("\n".join(opens) + "\n")
    (tmp_path / "clicks.txt").write_text("\n".join(clicks) + "\n")

    # The endpoint's own cost, without HTTP or contention: one request at a time.
    client = app.test_client()
    before = {kind: _events(app, kind) for kind in ("email_open", "email_click")}
    with _writer(app):
        started = time.perf_counter()
        for path in opens[:IN_PROCESS]:
            assert client.get(path).status_code == 200
        report("tracking_open_in_process_us", f"{(time.perf_counter() - started) / IN_PROCESS * 1e6:.0f}")
    assert _events(app, "email_open") == before["email_open"] + IN_PROCESS

    port, hello_port = free_port(), free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    portal_server = gunicorn("wsgi:app", port, worker_env, log)
    hello_server = gunicorn("tests.benchmarks.hello_app:app", hello_port, worker_env, log)
    base, hello = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{hello_port}"
    try:
        report("load_average_before", load_average())
        hello_pixel = wrk(tmp_path, "hello_world_gif", f"{hello}/pixel.gif", {})
        opened_before = _events(app, "email_open")
        with _writer(app) as open_writer:
            pixel = wrk(tmp_path, "tracking_open", base, {}, PATHS_FROM_FILE, (str(tmp_path / "opens.txt"),))
        opened = _events(app, "email_open") - opened_before
        hello_redirect = wrk(tmp_path, "hello_world_redirect", f"{hello}/redirect", {})
        clicked_before = _events(app, "email_click")
        with _writer(app) as click_writer:
            click = wrk(tmp_path, "tracking_click", base, {}, PATHS_FROM_FILE, (str(tmp_path / "clicks.txt"),))
        clicked = _events(app, "email_click") - clicked_before
        report("load_average_after", load_average())
    finally:
        for server in (portal_server, hello_server):
            server.terminate()
            server.wait(timeout=15)
        log.close()

    open_ratio = pixel["requests_per_s"] / hello_pixel["requests_per_s"]
    click_ratio = click["requests_per_s"] / hello_redirect["requests_per_s"]
    report("tracking_open_events", opened)
    report("tracking_click_events", clicked)
    for name, spent in (("open", open_writer), ("click", click_writer)):
        for figure, key in (("ms", "seconds"), ("cpu_ms", "cpu_seconds")):
            per_thousand = spent[key] / max(spent["entries"], 1) * 1000 * 1000
            report(f"tracking_{name}_writer_{figure}_per_1000_events", f"{per_thousand:.1f}")
    report("tracking_open_ratio", f"{open_ratio:.2f}")
    report("tracking_click_ratio", f"{click_ratio:.2f}")
    report("tracking_goal_ratio", GOAL_RATIO)
    # Every answered request left its event; at most the requests in flight at the end are extra.
    assert pixel["requests"] <= opened <= pixel["requests"] + CONNECTIONS
    assert click["requests"] <= clicked <= click["requests"] + CONNECTIONS
