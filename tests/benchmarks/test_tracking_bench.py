"""Tracking endpoints under a small load: a real gunicorn (2 workers) on 127.0.0.1 serving
the app on the test database, hit by a bounded loop of client threads.

Prints requests/s and p95 latency for the open pixel and the click redirect, and checks
that every request left exactly one event (nothing lost). BENCH_TRACKING_REQUESTS sets
the number of requests per endpoint (default 2000)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from sqlalchemy import func, select

from tests.conftest import ROOT, free_port, wait_for_port

REQUESTS = int(os.environ.get("BENCH_TRACKING_REQUESTS", "2000"))
CLIENT_THREADS = 8


def _hammer(urls: list[str], expected_status: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    def worker(chunk: list[str]) -> list[float]:
        seen = []
        with requests.Session() as session:
            for url in chunk:
                started = time.perf_counter()
                with session.get(url, allow_redirects=False) as response:
                    assert response.status_code == expected_status, response.status_code
                seen.append(time.perf_counter() - started)
        return seen

    chunks = [urls[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        for seen in pool.map(worker, chunks):
            latencies.extend(seen)
    return time.perf_counter() - started, latencies


def _report(name: str, elapsed: float, latencies: list[float]) -> None:
    p95 = statistics.quantiles(latencies, n=20)[18] * 1000
    print(f"{name}_requests_per_s={len(latencies) / elapsed:.0f}")
    print(f"{name}_p95_ms={p95:.1f}")


def test_tracking_endpoints_under_load(app, worker_env, tmp_path):
    from portal.audience.models import Contact, ContactEvent
    from portal.delivery.tokens import tracking_tokens
    from portal.extensions import db

    with app.app_context():
        contacts = [Contact(email=f"load{i}@example.org", name=f"客户{i}") for i in range(100)]
        db.session.add_all(contacts)
        db.session.commit()
        contact_ids = [c.id for c in contacts]
        db.session.remove()
    tokens = tracking_tokens(app)

    # The endpoint's own cost, without HTTP or client contention: one request at a time.
    client = app.test_client()
    started = time.perf_counter()
    for i in range(500):
        client.get(f"/t/o/{tokens.open_token(i, contact_ids[i % 100])}.gif")
    print(f"\ntracking_open_in_process_us={(time.perf_counter() - started) / 500 * 1e6:.0f}")

    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "-w",
            "2",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        opens = [f"{base}/t/o/{tokens.open_token(i, contact_ids[i % 100])}.gif" for i in range(REQUESTS)]
        link = tokens.link_token("https://www.example.com/offer")
        clicks = [f"{base}/t/c/{tokens.click_token(i, contact_ids[i % 100])}/{link}" for i in range(REQUESTS)]
        _hammer(opens[:50], 200)  # warm up both workers
        elapsed, latencies = _hammer(opens[50:], 200)
        _report("tracking_open", elapsed, latencies)
        elapsed, latencies = _hammer(clicks, 302)
        _report("tracking_click", elapsed, latencies)
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()

    with app.app_context():
        counts = dict(db.session.execute(select(ContactEvent.kind, func.count()).group_by(ContactEvent.kind)).all())
        db.session.remove()
    # Every request that was answered left its event: nothing buffered, nothing lost.
    assert counts == {"email_open": REQUESTS + 500, "email_click": REQUESTS}
