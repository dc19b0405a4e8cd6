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
