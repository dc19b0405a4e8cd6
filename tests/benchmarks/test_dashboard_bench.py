"""The reports dashboard at a million deliveries, for twenty managers at once.

Data: the report benchmark's generator (one campaign, 1,000,000 deliveries over four steps,
~300,000 tracking events) and contacts up to 1,000,200. Served by gunicorn with the README's
settings (2 workers x 4 threads, gthread); load from `wrk` with 20 connections, each request
signed in as one of twenty marketing managers in turn, p50/p95 from a Lua done() hook. In the
same run: Flask's hello world under the same gunicorn settings (the baseline), the home page at
1,000 and at 1,000,200 contacts.

Goals: the dashboard and a filter change (htmx, cycling the grouping) each within 3x the
hello world's p95 (three rounds of the three loads, judged on the median round's ratio); a full
recomputation from the ledger within 1.5x one hand-written SQL pass. Also prints the rollups'
own cost per 1,000 results recorded (the database trigger on the writer's side, the refresh on
the job's side). BENCH_WRK_SECONDS sets each load's length."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text

from tests.benchmarks.conftest import ROWS, report
from tests.benchmarks.load import answer_size, gunicorn, load_average, wrk
from tests.benchmarks.test_report_bench import HAND_WRITTEN, _generate
from tests.conftest import free_port

CONTACTS = 1_000_200
RESULTS_MEASURED = 1000

MANAGERS = 20
GROUPINGS = ("industry", "province", "lifecycle", "tag")


def _as_managers(paths: list[str], cookies: list[str]) -> str:
    """wrk's requests for each of `paths` as each manager (their session cookies), in turn: one
    manager after another, each path after another. They are made once per wrk thread (in
    init), as the hello world's one request is: formatting a request in Lua for every request
    sent cost wrk a share of the two cores the servers measured need."""
    quoted = ", ".join(f'"{item}"' for item in paths)
    sessions = ", ".join(f'"{cookie}"' for cookie in cookies)
    return f"""
local paths = {{{quoted}}}
local cookies = {{{sessions}}}
local requests = {{}}
local n = 0
init = function(args)
  for _, cookie in ipairs(cookies) do
    for _, path in ipairs(paths) do
      local headers = {{}}
      for name, value in pairs(wrk.headers) do headers[name] = value end
      headers["Cookie"] = "session=" .. cookie
      requests[#requests + 1] = wrk.format("GET", path, headers)
    end
  end
end
request = function()
  n = n + 1
  return requests[(n - 1) % #requests + 1]
end
"""


def _signed_in_cookie(user_id: int) -> str:
    """A server-side session for the manager, as signing in leaves it."""
    from portal.access import SIGNED_IN_AT_KEY
    from portal.auth.models import WebSession
    from portal.extensions import db
    from portal.models_base import utcnow

    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(
        WebSession(
            id_hash=hashlib.sha256(session_id.encode()).hexdigest(),
            user_id=user_id,
            data={"_user_id": str(user_id), "_fresh": True, SIGNED_IN_AT_KEY: now.isoformat()},
            created_at=now,
            last_seen_at=now,
        )
    )
    db.session.commit()
    return session_id


def _add_contacts(count: int, prefix: str) -> None:
    from portal.extensions import db

    db.session.execute(
        text("""
        INSERT INTO contacts (email, name, company, industry, province, city, company_size, attributes, score,
                              lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed, suppression_reason,
                              created_at, updated_at)
        SELECT :prefix || g || '@example.org', '客户' || g, '', '科技', '上海市', '', '', '{}', 10, 'new',
               false, '', false, '', now(), now()
        FROM generate_series(1, :count) AS g
    """),
        {"count": count, "prefix": prefix},
    )
    db.session.commit()


def _best_of(runs: int, function) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def _rollup_costs(campaign_id: int) -> None:
    """What recording results costs the rollups: the trigger's share of the writer's statements
    (opens taken by the tracking intake and written in a batch, as its periodic job does; rounds
    with and without the trigger alternate, the best of each is kept), then the refresh that
    counts them."""
    from portal.delivery import intake
    from portal.delivery.tokens import Recipient
    from portal.extensions import db
    from portal.reports import rollups

    rounds = 3
    ids = list(
        db.session.scalars(
            text(
                "SELECT id FROM deliveries WHERE campaign_id = :c AND status = 'sent' AND opened_at IS NULL "
                "ORDER BY id LIMIT :n"
            ),
            {"c": campaign_id, "n": 2 * rounds * RESULTS_MEASURED},
        )
    )
    contact_of = dict(
        db.session.execute(text("SELECT id, contact_id FROM deliveries WHERE id = ANY(:ids)"), {"ids": ids}).all()
    )
    chunks = [ids[i : i + RESULTS_MEASURED] for i in range(0, len(ids), RESULTS_MEASURED)]

    def record_opens(chosen: list[int], trigger: bool) -> float:
        db.session.execute(
            text(f"ALTER TABLE deliveries {'ENABLE' if trigger else 'DISABLE'} TRIGGER report_deliveries_updated")
        )
        db.session.commit()
        for delivery_id in chosen:
            intake.append("email_open", Recipient(delivery_id, contact_of[delivery_id]))
        started = time.perf_counter()
        assert intake.flush() == len(chosen)
        return time.perf_counter() - started

    try:
        bare = min(record_opens(chunks[2 * n], trigger=False) for n in range(rounds))
        noted = min(record_opens(chunks[2 * n + 1], trigger=True) for n in range(rounds))
    finally:
        db.session.execute(text("ALTER TABLE deliveries ENABLE TRIGGER report_deliveries_updated"))
        db.session.commit()
    # The opens recorded without the trigger are noted by hand, so the rollups stay right.
    untriggered = [i for n in range(rounds) for i in chunks[2 * n]]
    db.session.execute(
        text("INSERT INTO report_dirty_contacts (contact_id) SELECT contact_id FROM deliveries WHERE id = ANY(:ids)"),
        {"ids": untriggered},
    )
    db.session.commit()
    per_thousand = 1000 / RESULTS_MEASURED
    report("results_recorded_ms_per_1000_without_rollups", f"{bare * 1000 * per_thousand:.1f}")
    report("results_recorded_ms_per_1000_with_rollup_trigger", f"{noted * 1000 * per_thousand:.1f}")
    report("rollup_trigger_ms_per_1000_results", f"{(noted - bare) * 1000 * per_thousand:.1f}")
    started = time.perf_counter()
    counted = rollups.refresh()
    refresh_seconds = time.perf_counter() - started
    report("rollup_refresh_contacts", counted)
    report("rollup_refresh_ms_per_1000_results", f"{refresh_seconds * 1000 * 1000 / len(ids):.1f}")


def test_dashboard_at_a_million_deliveries_for_twenty_managers(app, make_user, worker_env, tmp_path):
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    from portal.extensions import db
    from portal.reports import metrics, rollups

    with app.app_context():
        cookies = [_signed_in_cookie(make_user("marketing_manager")) for _ in range(MANAGERS)]
        cookie = cookies[0]
        _add_contacts(1000, "first")
        db.session.remove()
    env = {**worker_env, "REPORT_ROLLUP_MAX_AGE_SECONDS": "60"}
    port, hello_port = free_port(), free_port()
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    portal_server = gunicorn("wsgi:app", port, env, log)
    hello_server = gunicorn("tests.benchmarks.hello_app:app", hello_port, env, log)
    base, session = f"http://127.0.0.1:{port}", {"Cookie": f"session={cookie}"}
    try:
        home = requests.get(f"{base}/", headers=session, timeout=60)
        assert home.status_code == 200 and 'id="kpi-contacts">1000<' in home.text
        report("load_average_before", load_average())
        wrk(tmp_path, "hello_world_before", f"http://127.0.0.1:{hello_port}/", {})
        wrk(tmp_path, "home_1000_contacts", f"{base}/", session)

        campaign_id = _generate(app, make_user)
        with app.app_context():
            _add_contacts(CONTACTS - 1000 - ROWS // 4, "more")
            db.session.execute(text("ANALYZE"))
            db.session.commit()
            report("contacts", db.session.scalar(text("SELECT count(*) FROM contacts")))
            started = time.perf_counter()
            counted = rollups.refresh()
            seconds = time.perf_counter() - started
            report("rollup_first_count_contacts", counted)
            report("rollup_first_count_seconds", f"{seconds:.1f}")
            report("rollup_first_count_ms_per_1000_deliveries", f"{seconds * 1000 * 1000 / ROWS:.1f}")
            _rollup_costs(campaign_id)
            report("rollup_rows", db.session.scalar(text("SELECT count(*) FROM report_rollups")))

            # The full recomputation (from the ledger, as for a date range) against hand-written SQL.
            filters = metrics.Filters(campaign_ids=(campaign_id,))
            recomputed = _best_of(2, lambda: metrics.recomputed(filters))
            db.session.commit()
            hand = _best_of(2, lambda: db.session.execute(text(HAND_WRITTEN), {"campaign": campaign_id}).all())
            db.session.commit()
            report("full_recomputation_seconds", f"{recomputed:.2f}")
            report("hand_written_sql_seconds", f"{hand:.2f}")
            report("full_recomputation_ratio", f"{recomputed / hand:.2f}")
            report("full_recomputation_goal_ratio", 1.5)
            # The same figures from the rollups, as a page computes them when nothing is cached.
            rolled = _best_of(2, lambda: metrics._uncosted(filters, ("campaign", "channel", "province")))
            report("dashboard_figures_from_rollups_uncached_ms", f"{rolled * 1000:.1f}")
            total, _groups = metrics.grouped(filters)
            exact, _exact_groups = metrics.recomputed(filters)
            assert total == exact
            db.session.remove()

        first = time.perf_counter()
        page = requests.get(f"{base}/reports/", headers=session, timeout=120)
        report("dashboard_first_request_ms", f"{(time.perf_counter() - first) * 1000:.0f}")
        assert page.status_code == 200 and 'id="kpi-delivered"' in page.text and "数据截至" in page.text
        report("dashboard_page_bytes", len(page.content))
        fragment = requests.get(f"{base}/reports/?grouping=tag", headers={**session, "HX-Request": "true"}, timeout=60)
        assert fragment.status_code == 200 and "<html" not in fragment.text and "高意向客户" in fragment.text

        # Twenty managers at work, each with a session of their own: each load follows its own
        # warm-up, which times the first computation in each web process (concurrent requests
        # reach both) apart from the steady state, then has every manager open the page in each
        # process, as managers who have the portal open have. A rendering nobody asked for
        # within half the age limit is made again by its next reader, as in the first one.
        def first_in_each_process(name: str, path: str, headers: dict[str, str]) -> float:
            def ask(signed_in: str) -> requests.Response:
                return requests.get(f"{base}{path}", headers={"Cookie": f"session={signed_in}", **headers}, timeout=120)

            first = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _n: ask(cookie), range(8)))
                report(f"{name}_first_in_each_process_ms", f"{(time.perf_counter() - first) * 1000:.0f}")
                answers += pool.map(ask, [other for other in cookies for _n in range(8)])
            assert all(answer.status_code == 200 for answer in answers)
            return statistics.mean(answer_size(answer) for answer in answers)

        # The mean size of each load's answers, which the answers under load must have.
        sizes = {
            "dashboard": first_in_each_process("dashboard", "/reports/", {}),
            "filter_change": statistics.mean(
                first_in_each_process(
                    f"filter_change_{grouping}", f"/reports/?grouping={grouping}", {"HX-Request": "true"}
                )
                for grouping in GROUPINGS
            ),
        }
        # Three rounds, each the hello world, then the dashboard, then a filter change, one right
        # after the other: these machines are shared with other work, and a load's p95 moved by a
        # quarter from one run to the next. Each round's figures and ratios are printed; the goal
        # is judged on the median round.
        pages = {
            "dashboard": ({}, ["/reports/"]),
            "filter_change": ({"HX-Request": "true"}, [f"/reports/?grouping={grouping}" for grouping in GROUPINGS]),
        }
        ratios: dict[str, list[float]] = {name: [] for name in pages}
        for number in (1, 2, 3):
            hello_p95 = wrk(tmp_path, f"hello_world_round{number}", f"http://127.0.0.1:{hello_port}/", {})["p95_ms"]
            for name, (headers, paths) in pages.items():
                p95 = wrk(
                    tmp_path,
                    f"{name}_round{number}",
                    f"{base}/reports/",
                    headers,
                    _as_managers(paths, cookies),
                    answer_bytes=sizes[name],
                )
                ratios[name].append(p95["p95_ms"] / hello_p95)
                report(f"{name}_p95_ratio_round{number}", f"{ratios[name][-1]:.2f}")
        wrk(tmp_path, "home_1000200_contacts", f"{base}/", session)
        report("load_average_after", load_average())
        for name, found in ratios.items():
            report(f"{name}_p95_ratio", f"{statistics.median(found):.2f}")
        report("p95_goal_ratio", 3)
    finally:
        for server in (portal_server, hello_server):
            server.terminate()
            server.wait(timeout=15)
        log.close()
