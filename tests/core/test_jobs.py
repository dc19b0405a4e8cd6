import json
import time

from portal.extensions import db
from portal.labels import job_message
from portal.queue import JobRun, enqueue


def wait_until_done(app, job_run_id: int, timeout: float = 30) -> JobRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            run = db.session.get(JobRun, job_run_id)
            if run.done:
                db.session.expunge(run)
                return run
        time.sleep(0.2)
    raise AssertionError(f"job run {job_run_id} not done after {timeout}s")


def test_job_round_trip_through_a_real_worker(app, smtp, start_worker, make_user):
    admin_id = make_user("administrator")
    with app.app_context():
        from portal.auth.models import User

        run = enqueue(
            "jobs.maintenance.run_diagnostics",
            kind="diagnostics",
            actor=db.session.get(User, admin_id),
        )
        run_id = run.id
        assert run.status == "queued"
        assert run.rq_job_id
    start_worker(burst=True).wait(timeout=60)
    run = wait_until_done(app, run_id)
    assert run.status == "finished"
    assert run.progress == 100
    assert run.created_by_id == admin_id
    checks = json.loads(run.message)["checks"]
    assert [(c["name"], c["ok"]) for c in checks] == [("database", True), ("redis", True), ("smtp", True)]
    # The person who started it reads the checks in their language, never the codes.
    with app.test_request_context(headers={"Accept-Language": "zh-CN"}):
        shown = job_message(run.message)
    assert "数据库：可连接" in shown and "邮件服务器：可连接" in shown
    assert "database" not in shown and "smtp" not in shown
    with app.test_request_context(headers={"Accept-Language": "en"}):
        assert "Mail server: reachable" in job_message(run.message)
    assert run.started_at <= run.finished_at


def test_a_job_that_raises_is_recorded_as_failed_and_reraises(db):
    import pytest

    from jobs.tracking import tracked

    run = JobRun(kind="diagnostics", job_name="x", queue="default")
    db.session.add(run)
    db.session.commit()
    with pytest.raises(ValueError), tracked(run.id) as progress:
        progress.update(30, "working")
        raise ValueError("the file is not a spreadsheet")
    db.session.expire_all()
    run = db.session.get(JobRun, run.id)
    assert run.status == "failed"
    assert run.message == "ValueError: the file is not a spreadsheet"
    assert run.progress == 30
    assert run.finished_at is not None


def test_progress_fragment_polls_until_done_then_stops(app, client, login_as):
    user_id = login_as("administrator")
    with app.app_context():
        run = JobRun(
            kind="diagnostics",
            job_name="jobs.maintenance.run_diagnostics",
            queue="default",
            created_by_id=user_id,
            status="started",
            progress=40,
            message="halfway",
        )
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    fragment = client.get(f"/jobs/{run_id}", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    html = fragment.get_data(as_text=True)
    assert "<html" not in html
    assert 'hx-trigger="every 1s"' in html
    assert 'value="40"' in html
    assert "halfway" in html
    with app.app_context():
        db.session.get(JobRun, run_id).status = "finished"
        db.session.commit()
    html = client.get(f"/jobs/{run_id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "hx-trigger" not in html
    page = client.get(f"/jobs/{run_id}").get_data(as_text=True)
    assert "<html" in page and f'id="job-{run_id}"' in page


def test_someone_elses_job_is_not_shown(app, client, login_as, make_user):
    owner = make_user("operations_specialist")
    login_as("reviewer")
    with app.app_context():
        run = JobRun(kind="import", job_name="x", queue="default", created_by_id=owner)
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert client.get(f"/jobs/{run_id}").status_code == 404


def test_abandoned_job_run_is_closed_when_its_queue_entry_is_gone(app, db):
    from datetime import timedelta

    from jobs.maintenance import fail_abandoned_job_runs
    from portal.models_base import utcnow

    run = enqueue("jobs.maintenance.run_diagnostics", kind="diagnostics")
    fresh = enqueue("jobs.maintenance.run_diagnostics", kind="diagnostics")
    run.created_at = fresh.created_at = utcnow() - timedelta(minutes=10)
    db.session.commit()
    app.extensions["redis"].delete(f"rq:job:{run.rq_job_id}")  # as if Redis had been flushed

    assert fail_abandoned_job_runs() == 1
    db.session.expire_all()
    assert db.session.get(JobRun, run.id).status == "failed"
    assert "Start it again" in db.session.get(JobRun, run.id).message
    assert db.session.get(JobRun, fresh.id).status == "queued"  # still in the queue: left alone


def test_a_failed_job_page_says_so_in_the_readers_language_without_the_error_text(app, client, login_as):
    user_id = login_as("administrator")
    with app.app_context():
        run = JobRun(
            kind="import",
            job_name="jobs.audience.run_import",
            queue="default",
            created_by_id=user_id,
            status="failed",
            progress=30,
            message="ImportFailed: file_unreadable",
        )
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    page = client.get(f"/jobs/{run_id}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "ImportFailed" not in page and "file_unreadable" not in page
    assert "任务因错误而停止" in page
