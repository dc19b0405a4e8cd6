"""report rollups hold the conversions of the default kind and window

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01 16:30:00

The dashboard's default conversions (purchases within 30 days) are counted in the rollups like
every other figure, so that no page reads them from the ledger. A trigger notes the contact of
every purchase event written, changed or deleted; the contacts who already have purchases are
noted here, so that the next refresh counts them. States counted before this revision hold the
older counters only: the refresh reads the new ones as zero for them (rollups._add).
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

# rollups.CONVERSION_KIND: the trigger below names it.
KIND = "purchase"
COUNTS = ("converted", "step_converted", "channel_converted", "all_channel_converted")
SUMS = ("revenue", "step_revenue", "channel_revenue", "all_channel_revenue")

# Row triggers with a WHEN clause: the tracking intake writes thousands of opens and clicks a
# statement, and for those the condition is checked without calling the function at all.
POSTGRESQL_TRIGGERS = f"""
CREATE FUNCTION report_note_conversion_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'DELETE' AND NEW.kind = '{KIND}' THEN
    INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id);
  END IF;
  IF TG_OP <> 'INSERT' AND OLD.kind = '{KIND}' THEN
    INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER report_conversion_event_inserted AFTER INSERT ON contact_events FOR EACH ROW
  WHEN (NEW.kind = '{KIND}') EXECUTE FUNCTION report_note_conversion_event();
CREATE TRIGGER report_conversion_event_deleted AFTER DELETE ON contact_events FOR EACH ROW
  WHEN (OLD.kind = '{KIND}') EXECUTE FUNCTION report_note_conversion_event();
CREATE TRIGGER report_conversion_event_updated AFTER UPDATE ON contact_events FOR EACH ROW
  WHEN ((OLD.kind = '{KIND}' OR NEW.kind = '{KIND}')
        AND (OLD.kind, OLD.contact_id, OLD.occurred_at, OLD.properties::text)
            IS DISTINCT FROM (NEW.kind, NEW.contact_id, NEW.occurred_at, NEW.properties::text))
  EXECUTE FUNCTION report_note_conversion_event();
"""
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER report_conversion_event_inserted AFTER INSERT ON contact_events WHEN NEW.kind = '{KIND}' "
    "BEGIN INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id); END",
    f"CREATE TRIGGER report_conversion_event_deleted AFTER DELETE ON contact_events WHEN OLD.kind = '{KIND}' "
    "BEGIN INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id); END",
    "CREATE TRIGGER report_conversion_event_updated AFTER UPDATE ON contact_events "
    f"WHEN (OLD.kind = '{KIND}' OR NEW.kind = '{KIND}') AND (OLD.kind IS NOT NEW.kind "
    "OR OLD.contact_id IS NOT NEW.contact_id OR OLD.occurred_at IS NOT NEW.occurred_at "
    "OR OLD.properties IS NOT NEW.properties) "
    f"BEGIN INSERT INTO report_dirty_contacts (contact_id) SELECT NEW.contact_id WHERE NEW.kind = '{KIND}'; "
    f"INSERT INTO report_dirty_contacts (contact_id) SELECT OLD.contact_id WHERE OLD.kind = '{KIND}'; END",
]
TRIGGERS = ("report_conversion_event_inserted", "report_conversion_event_deleted", "report_conversion_event_updated")


def upgrade():
    with op.batch_alter_table("report_rollups") as batch:
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        for name in SUMS:
            batch.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    # Contacts counted already whose purchases the rollups do not hold yet.
    op.execute(
        "INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM contact_events "
        f"WHERE kind = '{KIND}' AND contact_id IN (SELECT contact_id FROM report_counted_contacts)"
    )


def downgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    for trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (" ON contact_events" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS report_note_conversion_event()")
    # The states counted with the conversions are read as the older counters plus these:
    # counted again from scratch at the next refresh.
    op.execute("DELETE FROM report_rollups")
    op.execute("DELETE FROM report_series_counts")
    op.execute("DELETE FROM report_counted_contacts")
    op.execute("INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM deliveries")
    with op.batch_alter_table("report_rollups") as batch:
        for name in (*COUNTS, *SUMS):
            batch.drop_column(name)
