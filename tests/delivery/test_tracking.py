"""The public tracking endpoints: open pixel, click redirect and unsubscribe."""

from __future__ import annotations

from sqlalchemy import select

from portal.audience.models import Contact, ContactEvent
from portal.audit import AuditEvent
from portal.delivery.tracking_app import PIXEL


def events(app, kind=None):
    """The events recorded, once the intake has written what it took (as its periodic job does)."""
    from portal.delivery import intake
    from portal.extensions import db

    with app.app_context():
        intake.flush()
        query = select(ContactEvent).order_by(ContactEvent.id)
        if kind:
            query = query.where(ContactEvent.kind == kind)
        rows = list(db.session.scalars(query))
        db.session.remove()
        return rows


def contact(app, contact_id):
    from portal.extensions import db

    with app.app_context():
        row = db.session.get(Contact, contact_id)
        db.session.expunge(row)
        db.session.remove()
        return row


def test_open_pixel_answers_a_gif_and_records_the_open(app, client, make_contact, tokens):
    contact_id = make_contact()
    response = client.get(f"/t/o/{tokens.open_token(41, contact_id)}.gif")
    assert response.status_code == 200
    assert response.mimetype == "image/gif"
    assert response.data == PIXEL
    [event] = events(app)
    assert (event.contact_id, event.kind, event.source) == (contact_id, "email_open", "tracking")
    assert event.properties == {"delivery_id": 41}


def test_open_pixel_is_never_cached(client, make_contact, tokens):
    response = client.get(f"/t/o/{tokens.open_token(1, make_contact())}.gif")
    assert "no-store" in response.headers["Cache-Control"]
    assert response.headers["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response.headers


def test_open_pixel_answers_a_gif_for_a_bad_token_and_records_nothing(app, client, make_contact):
    make_contact()
    response = client.get("/t/o/WzEsMV0.forged.gif")
    assert response.status_code == 200
    assert response.data == PIXEL
    assert events(app) == []


def test_open_of_an_erased_contact_records_nothing(app, client, tokens):
    response = client.get(f"/t/o/{tokens.open_token(1, 999999)}.gif")
    assert response.status_code == 200
    assert events(app) == []


def test_click_redirects_to_the_signed_url_and_records_the_click(app, client, make_contact, tokens):
    contact_id = make_contact()
    url = "https://www.example.com/offer?a=1&b=中文"
    response = client.get(f"/t/c/{tokens.click_token(7, contact_id)}/{tokens.link_token(url)}")
    assert response.status_code == 302
    assert response.headers["Location"] == "https://www.example.com/offer?a=1&b=%E4%B8%AD%E6%96%87"
    [event] = events(app)
    assert event.kind == "email_click"
    assert event.properties == {"delivery_id": 7, "url": url}


def test_click_with_a_forged_link_token_is_a_404_not_a_redirect(app, client, make_contact, tokens):
    click = tokens.click_token(7, make_contact())
    genuine = tokens.link_token("https://www.example.com/")
    _payload, _, signature = genuine.partition(".")
    import base64

    evil = base64.urlsafe_b64encode(b'"https://evil.example/"').rstrip(b"=").decode()
    response = client.get(f"/t/c/{click}/{evil}.{signature}", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 404
    assert "Location" not in response.headers
    # The portal's own page, in the reader's language.
    assert "页面不存在或已被删除。" in response.get_data(as_text=True)
    assert events(app) == []


def test_tracking_answers_carry_no_session_and_head_is_answered(client, make_contact, tokens):
    contact_id = make_contact()
    for method in ("get", "head"):
        response = getattr(client, method)(f"/t/o/{tokens.open_token(1, contact_id)}.gif")
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert response.headers["Content-Length"] == str(len(PIXEL))
        assert response.data == (PIXEL if method == "get" else b"")
        assert "Set-Cookie" not in response.headers
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Any other method is the portal's: no such page.
    assert client.post(f"/t/o/{tokens.open_token(1, contact_id)}.gif").status_code in (404, 405)


def test_click_refuses_a_token_made_for_another_purpose(client, make_contact, tokens):
    contact_id = make_contact()
    # An open token carries the same ids as a click token but another salt.
    response = client.get(f"/t/c/{tokens.open_token(7, contact_id)}/{tokens.link_token('https://example.com/')}")
    assert response.status_code == 404


def test_click_refuses_a_signed_url_that_is_not_http(client, make_contact, tokens):
    response = client.get(f"/t/c/{tokens.click_token(1, make_contact())}/{tokens.link_token('javascript:alert(1)')}")
    assert response.status_code == 404


def test_unsubscribe_get_shows_a_confirm_page_and_unsubscribes_nobody(app, client, make_contact, tokens):
    contact_id = make_contact()
    response = client.get(f"/u/{tokens.unsubscribe_token(3, contact_id)}", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "退订" in page
    assert "l***@example.com" in page
    assert 'method="post"' in page
    assert contact(app, contact_id).unsubscribed is False
    assert events(app) == []


def test_unsubscribe_confirm_page_speaks_english_when_asked(client, make_contact, tokens):
    token = tokens.unsubscribe_token(3, make_contact())
    response = client.get(f"/u/{token}", headers={"Accept-Language": "en"})
    assert "Stop marketing emails to l***@example.com?" in response.get_data(as_text=True)


def test_one_click_post_unsubscribes_without_cookies_or_csrf_token(app, make_contact, tokens, monkeypatch):
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    contact_id = make_contact()
    fresh = app.test_client(use_cookies=False)
    # CSRF protection is really on: an ordinary form without a token is refused.
    assert fresh.post("/locale", data={"locale": "en"}).status_code == 400
    response = fresh.post(
        f"/u/{tokens.unsubscribe_token(3, contact_id)}",
        data={"List-Unsubscribe": "One-Click"},
    )
    assert response.status_code == 200
    unsubscribed = contact(app, contact_id)
    assert unsubscribed.unsubscribed is True
    assert unsubscribed.unsubscribed_at is not None
    assert unsubscribed.unsubscribe_reason == "one-click unsubscribe"
    [event] = events(app, "unsubscribe")
    assert event.properties == {"delivery_id": 3, "method": "one_click"}


def test_confirm_page_button_unsubscribes_and_shows_the_done_page(app, client, make_contact, tokens):
    contact_id = make_contact()
    response = client.post(
        f"/u/{tokens.unsubscribe_token(3, contact_id)}",
        data={"List-Unsubscribe": "One-Click", "via": "page"},
        headers={"Accept-Language": "en"},
    )
    assert "You are unsubscribed" in response.get_data(as_text=True)
    assert contact(app, contact_id).unsubscribe_reason == "unsubscribe link"


def test_unsubscribe_is_idempotent(app, client, make_contact, tokens):
    contact_id = make_contact()
    url = f"/u/{tokens.unsubscribe_token(3, contact_id)}"
    client.post(url, data={"List-Unsubscribe": "One-Click"})
    first = contact(app, contact_id).unsubscribed_at
    again = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert contact(app, contact_id).unsubscribed_at == first
    assert len(events(app, "unsubscribe")) == 1


def test_unsubscribe_is_audited(app, client, make_contact, tokens):
    from portal.extensions import db

    contact_id = make_contact()
    client.post(f"/u/{tokens.unsubscribe_token(3, contact_id)}", data={"List-Unsubscribe": "One-Click"})
    with app.app_context():
        [entry] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "contact.unsubscribe"))
        assert entry.target == f"contact:{contact_id}"


def test_test_send_unsubscribe_link_changes_nothing(app, client, make_contact, tokens):
    contact_id = make_contact()
    token = tokens.test_unsubscribe_token(12)
    page = client.get(f"/u/{token}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "test send" in page
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert contact(app, contact_id).unsubscribed is False
    assert events(app) == []


def test_bad_unsubscribe_token_is_a_404(client, make_contact, tokens):
    token = tokens.open_token(3, make_contact())  # right shape, wrong purpose
    assert client.get(f"/u/{token}").status_code == 404
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404


def test_an_open_is_written_at_once_when_redis_cannot_take_it(app, client, make_contact, tokens, monkeypatch):
    """The intake is Redis; when it is down the endpoint writes the event itself: nothing lost."""
    from redis import Redis

    from tests.conftest import free_port

    contact_id = make_contact()
    monkeypatch.setitem(app.extensions, "redis", Redis(port=free_port(), socket_connect_timeout=1))
    assert client.get(f"/t/o/{tokens.open_token(1, contact_id)}.gif").status_code == 200
    url = "https://www.example.com/a"
    assert client.get(f"/t/c/{tokens.click_token(1, contact_id)}/{tokens.link_token(url)}").status_code == 302
    monkeypatch.undo()
    with app.app_context():
        from portal.extensions import db

        rows = list(db.session.scalars(select(ContactEvent).order_by(ContactEvent.id)))
        db.session.remove()
    assert [(e.kind, e.properties) for e in rows] == [
        ("email_open", {"delivery_id": 1}),
        ("email_click", {"delivery_id": 1, "url": url}),
    ]
