"""report rollups: a delivery update notes its contacts once per statement, not once per row

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-01 17:00:00

The tracking intake sets the first open and click times of thousands of deliveries a statement,
and the senders record a batch's results in one; the row trigger of revision 0016 ran its
function and an INSERT for every one of those rows (about 10 µs a row, the largest part of the
intake's cost after the rows themselves). On PostgreSQL the trigger now runs once per statement
over its transition tables (the rows before and after, joined on their id, which no update
changes) and notes the contacts of the changed rows in one INSERT ... SELECT, each contact once.
Which changes note a contact is exactly the row trigger's WHEN condition: the same columns, the
same status classes, compared with IS DISTINCT FROM; the contact before and after the change
are both noted. PostgreSQL takes transition tables only on triggers without a column list or a
WHEN clause, hence the condition in the query. SQLite has no transition tables: its row
triggers stay as they are.
"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# As in revision 0016: what a delivery adds to the rollups depends only on these columns and on
# the status (pending and sending count alike, so a sender's claim notes nothing).
DELIVERY_FIELDS = (
    "reason",
    "due_at",
    "sent_at",
    "opened_at",
    "clicked_at",
    "unsubscribed_at",
    "contact_id",
    "campaign_id",
    "step_id",
    "channel",
)


def _state(row: str) -> str:
    """The row's (status class, fields) tuple, as revision 0016's WHEN clause compares it."""
    status = f"CASE WHEN {row}.status IN ('pending', 'sending') THEN 'open' ELSE {row}.status END"
    return f"({status}, {', '.join(f'{row}.{field}' for field in DELIVERY_FIELDS)})"


STATEMENT_TRIGGER = f"""
CREATE FUNCTION report_note_delivery_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO report_dirty_contacts (contact_id)
  SELECT DISTINCT noted.contact_id
    FROM old_rows JOIN new_rows ON new_rows.id = old_rows.id,
         LATERAL (VALUES (old_rows.contact_id), (new_rows.contact_id)) AS noted(contact_id)
   WHERE {_state("old_rows")} IS DISTINCT FROM {_state("new_rows")};
  RETURN NULL;
END $$;
CREATE TRIGGER report_deliveries_updated AFTER UPDATE ON deliveries
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION report_note_delivery_updates();
"""

# Revision 0016's row trigger, restored by the downgrade.
ROW_TRIGGER = f"""
CREATE FUNCTION report_note_delivery_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id);
  IF OLD.contact_id <> NEW.contact_id THEN
    INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER report_deliveries_updated AFTER UPDATE ON deliveries FOR EACH ROW
  WHEN ({_state("OLD")} IS DISTINCT FROM {_state("NEW")})
  EXECUTE FUNCTION report_note_delivery_change();
"""


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER report_deliveries_updated ON deliveries")
    op.execute("DROP FUNCTION report_note_delivery_change()")
    op.execute(STATEMENT_TRIGGER)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER report_deliveries_updated ON deliveries")
    op.execute("DROP FUNCTION report_note_delivery_updates()")
    op.execute(ROW_TRIGGER)
