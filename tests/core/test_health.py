import time


def test_healthz_is_503_without_a_worker(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["workers"] == {"ok": False, "count": 0}


def test_healthz_is_200_when_database_redis_and_a_worker_answer(client, start_worker):
    start_worker()
    deadline = time.monotonic() + 20
    response = client.get("/healthz")
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["checks"]["workers"]["count"] == 1


def test_healthz_is_503_when_redis_is_unreachable(app, client, monkeypatch):
    from redis import Redis

    monkeypatch.setitem(app.extensions, "redis", Redis.from_url("redis://127.0.0.1:1/0"))
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["redis"]["ok"] is False
    assert checks["database"]["ok"] is True


def test_healthz_needs_no_sign_in(client):
    assert client.get("/healthz").status_code in (200, 503)
    assert client.get("/healthz").headers["Content-Type"] == "application/json"


def test_healthz_says_when_opens_and_clicks_wait_too_long_to_be_recorded(app, client, login_as):
    """The intake's writer runs every two seconds: an entry waiting a minute means it stopped."""
    from portal.delivery import intake
    from portal.extensions import db

    assert client.get("/healthz").get_json()["checks"]["tracking_intake"] == {
        "ok": True,
        "waiting": 0,
        "oldest_seconds": 0,
    }
    redis = app.extensions["redis"]
    taken_ms = int(time.time() * 1000) - 120_000
    redis.xadd(intake.STREAM, {"k": "email_open", "c": 999999, "d": ""}, id=f"{taken_ms}-0")
    response = client.get("/healthz")
    check = response.get_json()["checks"]["tracking_intake"]
    assert response.status_code == 503
    assert check["ok"] is False and check["waiting"] == 1 and check["oldest_seconds"] >= 120
    login_as("administrator")
    page = client.get("/system", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "等待记录的打开和点击" in page and "1 条等待，最早的已等待" in page

    with app.app_context():
        assert intake.flush() == 1  # the writer comes back: nothing waits any more
        db.session.remove()
    assert client.get("/healthz").get_json()["checks"]["tracking_intake"]["ok"] is True
