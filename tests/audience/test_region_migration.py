"""The revision adding contacts.region fills it for the contacts that exist already."""

from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from portal.extensions import db


def test_the_migration_fills_the_region_of_existing_contacts(app):
    with app.app_context():
        db.session.remove()
        downgrade(revision="0012")
        try:
            with db.engine.begin() as connection:
                connection.execute(
                    text(
                        "INSERT INTO contacts (email, name, company, industry, province, city, company_size,"
                        " attributes, score, lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed,"
                        " suppression_reason,"
                        " created_at, updated_at) VALUES (:email, '', '', '', :province, '', '', '{}', 60, 'new',"
                        " false, '', false, '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    [
                        {"email": "a@example.com", "province": "江苏省"},
                        {"email": "b@example.com", "province": "澳门特别行政区"},
                        {"email": "c@example.com", "province": "月球"},
                    ],
                )
        finally:
            upgrade()
        regions = dict(db.session.execute(text("SELECT email, region FROM contacts")).all())
    assert regions == {"a@example.com": "华东", "b@example.com": "港澳台/海外", "c@example.com": ""}
