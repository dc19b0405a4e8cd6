"""The portal across hosts: the web app (gunicorn, with the scheduler) and two RQ workers, each
on a host of its own (a network namespace with its own address, hostname and empty local
folders), sharing only PostgreSQL and Redis over the network.

- a campaign published on the web host is sent by both workers, each recipient exactly once;
- a report built on a worker host downloads from the web host;
- a worker host cut off mid-send (its link taken down) loses nothing: its leases are taken
  over by the other worker.

Needs root (namespaces) and PostgreSQL (DATABASE_URL); it says so and skips otherwise. Redis
and the SMTP sink are started here on this machine's side of the web host's link; PostgreSQL
(which listens on 127.0.0.1 in CI) is reached through a small TCP forwarder on that address."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from portal.campaigns.models import Campaign
from portal.delivery.models import Delivery
from portal.extensions import db
from tests import factories, pipeline
from tests.conftest import ROOT, TEST_SECRET, redis_server_binary
from tests.multihost.hosts import CannotMakeHosts, Forwarder, Host, Network, free_port_on

LEASE_SECONDS = 4
BATCH_SIZE = 20
SMTP_DELAY = 0.02  # seconds per message at the sink, so that both workers are busy at once
WEB_PORT = 8000


def wait_until(condition, timeout: float, what: str, cluster: Cluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    logs = cluster.logs() if cluster else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


class Sink:
    """An aiosmtpd handler noting, for every message, who sent it (the host's address) and to whom."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []  # (sending host's address, recipient)

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(SMTP_DELAY)
        for recipient in envelope.rcpt_tos:
            self.received.append((session.peer[0], recipient))
        return "250 Message accepted for delivery"


@dataclass
class Cluster:
    web: Host
    workers: list[Host]
    sink: Sink
    network: Network

    @property
    def web_url(self) -> str:
        return f"http://{self.web.address}:{WEB_PORT}"

    def logs(self) -> str:
        return "\n".join(host.log_tail() for host in [self.web, *self.workers])


@pytest.fixture
def cluster(app, database_url, tmp_path) -> Iterator[Cluster]:
    if not database_url.startswith("postgresql"):
        pytest.skip(
            "the multi-host run needs PostgreSQL (set DATABASE_URL=postgresql://...): SQLite is one host's file"
        )
    try:
        network = Network(tmp_path)
    except CannotMakeHosts as exc:
        pytest.skip(f"cannot make separate hosts: {exc}")
    started: list[Any] = []
    try:
        try:
            web = network.add("web")
            workers = [network.add("w1"), network.add("w2")]
        except CannotMakeHosts as exc:
            pytest.skip(f"cannot make separate hosts: {exc}")
        # Services on this machine, on its side of the web host's link (every host reaches
        # this machine's addresses through its own link).
        service_address = web.gateway
        redis_port = free_port_on(service_address)
        redis = _start_redis(service_address, redis_port, tmp_path)
        started.append(lambda: (redis.terminate(), redis.wait(timeout=10)))
        server = make_url(database_url)
        forwarder = Forwarder(service_address, server.host or "127.0.0.1", server.port or 5432)
        database_port = forwarder.start_serving()
        started.append(forwarder.stop)
        from aiosmtpd.controller import Controller

        sink = Sink()
        smtp_port = free_port_on(service_address)
        controller = Controller(sink, hostname=service_address, port=smtp_port)
        controller.start()
        started.append(controller.stop)

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "REDIS_", "STORAGE_", "SMTP_", "OUTBOX_", "PORTAL_"))
        }
        env.update(
            {
                "PORTAL_ENV": "testing",
                "SECRET_KEY": TEST_SECRET,
                "DATABASE_URL": server.set(host=service_address, port=database_port).render_as_string(
                    hide_password=False
                ),
                "REDIS_URL": f"redis://{service_address}:{redis_port}/0",
                "SMTP_URL": f"smtp://{service_address}:{smtp_port}",
                "OIDC_ISSUER": f"http://{service_address}:9",  # nobody signs in through SSO here
                "STORAGE_BACKEND": "database",
                "DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
                "DELIVERY_BATCH_SIZE": str(BATCH_SIZE),
                "SENDERS_PER_CAMPAIGN": "2",
                "SENDER_JOB_SECONDS": "10",
                # A cut-off host's open transaction (and its row locks) ends soon after its lease.
                "DATABASE_IDLE_TRANSACTION_SECONDS": "8",
                "PYTHONUNBUFFERED": "1",
            }
        )

        def host_env(host: Host) -> dict[str, str]:
            return {
                **env,
                "PORTAL_INSTANCE_PATH": str(host.home / "instance"),
                "STORAGE_DIR": str(host.home / "storage"),
                "PUBLIC_BASE_URL": f"http://{web.address}:{WEB_PORT}",
            }

        gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "4", "--no-control-socket"]
        web.start([*gunicorn, "--bind", f"{web.address}:{WEB_PORT}", "wsgi:app"], host_env(web), ROOT, "gunicorn")
        web.start([sys.executable, "-m", "jobs.schedule"], host_env(web), ROOT, "schedule")
        for worker in workers:
            worker.start([sys.executable, "-m", "jobs.worker"], host_env(worker), ROOT, "worker")
        cluster = Cluster(web, workers, sink, network)
        wait_until(lambda: _answers(cluster.web_url + "/healthz"), 90, "the web host to answer", cluster)
        yield cluster
    finally:
        network.close()
        for stop in reversed(started):
            stop()


def _start_redis(address: str, port: int, tmp_path) -> Any:
    import subprocess

    settings = ["--bind", address, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen([redis_server_binary(), *settings, "--protected-mode", "no"], stdout=subprocess.DEVNULL)
    wait_until(lambda: _listens(address, port), 10, "redis")
    return process


def _listens(address: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def _browser(cluster: Cluster, client, login_as) -> httpx.Client:
    """A signed-in manager's browser pointed at the web host (the session lives in the database)."""
    login_as("marketing_manager")
    cookie = client.get_cookie("session")
    return httpx.Client(base_url=cluster.web_url, cookies={"session": cookie.value}, timeout=15)


def _csrf(browser: httpx.Client, path: str) -> str:
    page = browser.get(path)
    assert page.status_code == 200, page.text[:500]
    return re.search(r'"X-CSRFToken": "([^"]+)"', page.text).group(1)


def _draft_campaign(app, make_user, contacts: int, prefix: str, province: str) -> tuple[int, list[str]]:
    """A draft campaign whose message step has passed its test send, to `contacts` new contacts
    in `province` (short name, as segments take it) and nobody else."""
    from portal.audience.models import Contact, Segment

    with app.app_context():
        team = factories.people(make_user)
        version = factories.approved_email(team["operations_specialist"], team["reviewer"])
        ids = factories.add_contacts(contacts, prefix=prefix, province=f"{province}市")
        rule = {"field": "province", "operator": "eq", "value": province}
        segment = Segment(name=prefix, rules={"op": "and", "items": [rule]})
        db.session.add(segment)
        db.session.commit()
        steps = [{"kind": "message", "channel": "email", "content_version_id": version}]
        campaign_id = factories.scheduled_campaign(team["marketing_manager"], segment.id, steps)
        campaign = db.session.get(Campaign, campaign_id)
        campaign.status, campaign.scheduled_at = "draft", None
        db.session.commit()
        pipeline.record_test_sends(campaign_id)
        emails = list(db.session.scalars(select(Contact.email).where(Contact.id.in_(ids))))
        return campaign_id, emails


def _publish(browser: httpx.Client, campaign_id: int) -> None:
    token = _csrf(browser, f"/campaigns/{campaign_id}")
    answer = browser.post(f"/campaigns/{campaign_id}/publish", data={"csrf_token": token})
    assert answer.status_code == 303, answer.text[:500]


def _statuses(app, campaign_id: int) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
        ).all()
        db.session.remove()
        return dict(rows)


def _all_sent(app, campaign_id: int, count: int) -> bool:
    return _statuses(app, campaign_id) == {"sent": count}


def test_hosts_share_only_the_database_and_redis(app, client, login_as, make_user, cluster: Cluster):
    with _browser(cluster, client, login_as) as browser:
        _campaigns_and_a_report(app, make_user, cluster, browser)


def _campaigns_and_a_report(app, make_user, cluster: Cluster, browser: httpx.Client) -> None:
    worker_addresses = {worker.address for worker in cluster.workers}

    # 1. Published on the web host, sent by both workers, each recipient exactly once.
    campaign_id, emails = _draft_campaign(app, make_user, 300, "mh", "上海")
    _publish(browser, campaign_id)
    wait_until(lambda: _all_sent(app, campaign_id, len(emails)), 45, "the first campaign to be sent", cluster)
    recipients = [to for _, to in cluster.sink.received]
    assert sorted(recipients) == sorted(emails), "each recipient exactly once"
    assert {address for address, _ in cluster.sink.received} == worker_addresses, "both worker hosts sent"

    # 2. A report built on a worker host downloads from the web host.
    token = _csrf(browser, "/reports/")
    answer = browser.post(
        "/reports/generate", data={"csrf_token": token, "kind": "campaign_pdf", "campaign_ids": str(campaign_id)}
    )
    assert answer.status_code == 303, answer.text[:500]
    report_id = int(answer.headers["location"].rstrip("/").rsplit("/", 1)[-1])
    from portal.reports.models import Report

    def report_ready() -> bool:
        with app.app_context():
            report = db.session.get(Report, report_id)
            ready = report.status == "ready"
            db.session.remove()
            return ready

    wait_until(report_ready, 45, "the report to be built", cluster)
    built_on = [w.name for w in cluster.workers if any((w.home / "storage").rglob("report-*.pdf"))]
    assert len(built_on) == 1, f"one worker host wrote the report, not {built_on}"
    assert not any((cluster.web.home / "storage").rglob("report-*")), "the web host had no copy before"
    download = browser.get(f"/reports/{report_id}/download")
    assert download.status_code == 200 and download.content.startswith(b"%PDF"), download.text[:300]
    with app.app_context():
        assert len(download.content) == db.session.get(Report, report_id).file_size
        db.session.remove()

    # 3. A worker host cut off mid-send loses nothing: its leases are taken over.
    cluster.sink.received.clear()
    campaign_id, emails = _draft_campaign(app, make_user, 600, "cut", "北京")
    _publish(browser, campaign_id)
    cut = cluster.workers[0]
    stranded: set[int] = set()

    def holding_leases_mid_send() -> bool:
        """The first worker has sent part of the campaign and holds a committed claim."""
        if sum(1 for address, _ in cluster.sink.received if address == cut.address) < BATCH_SIZE:
            return False
        with app.app_context():
            held = db.session.scalars(
                select(Delivery.id).where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == "sending",
                    Delivery.lease_owner.startswith(cut.name + ":"),
                )
            )
            stranded.update(held)
            db.session.remove()
        return bool(stranded)

    wait_until(holding_leases_mid_send, 30, "the first worker to hold leases mid-send", cluster)
    cut.cut_off()
    time.sleep(1)  # a message wholly sent before the cut may still be in the sink's hands
    sent_by_cut_before = sum(1 for address, _ in cluster.sink.received if address == cut.address)
    wait_until(lambda: _all_sent(app, campaign_id, len(emails)), 60, "the second campaign to be sent", cluster)
    recipients = [to for _, to in cluster.sink.received]
    assert set(recipients) == set(emails), "nobody was lost"
    repeated = len(recipients) - len(set(recipients))
    # At most what was in flight on the cut-off host (its claims) can go out twice.
    assert repeated <= len(stranded) + BATCH_SIZE, f"{repeated} messages sent twice"
    assert sum(1 for address, _ in cluster.sink.received if address == cut.address) == sent_by_cut_before
    with app.app_context():
        taken_over = db.session.scalar(select(func.count()).where(Delivery.id.in_(stranded), Delivery.status == "sent"))
        db.session.remove()
    assert taken_over == len(stranded)
    print(
        f"multihost: first campaign 300 by {len(worker_addresses)} hosts; cut-off host held {len(stranded)} "
        f"leases, all ended sent; {repeated} sent twice"
    )
