"""report rollups: counters per campaign step, day and dimension, refreshed from dirty contacts

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-01 03:30:00

Database triggers note which contacts need recounting whenever a delivery's result, a
contact's grouping fields or its tags change, so that no writer (the senders, the tracking
endpoints, imports, privacy erasure) has to know about reports.
"""
from alembic import op
import sqlalchemy as sa

import portal.models_base


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0014'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COUNTERS = (
    "messages", "audience", "attempted", "delivered", "hard_bounces", "soft_bounces", "opens", "clicks",
    "unsubscribes", "reached", "channel_reached", "all_channel_reached",
)
# What a delivery adds to the rollups depends only on these columns (pending and sending
# count alike, so a sender's claim marks nothing).
DELIVERY_FIELDS = ("reason", "due_at", "sent_at", "opened_at", "clicked_at", "unsubscribed_at",
                   "contact_id", "campaign_id", "step_id", "channel")
# Grouping fields of a contact.
CONTACT_FIELDS = ("province", "region", "industry", "lifecycle_stage")

POSTGRESQL_TRIGGERS = f"""
CREATE FUNCTION report_note_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM new_rows;
  ELSE
    INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM old_rows;
  END IF;
  RETURN NULL;
END $$;
-- Planning inserts and deletions come in bulk: one insert of their contacts per statement.
CREATE TRIGGER report_deliveries_inserted AFTER INSERT ON deliveries
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION report_note_deliveries();
CREATE TRIGGER report_deliveries_deleted AFTER DELETE ON deliveries
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION report_note_deliveries();

-- Results and tracking change rows one by one or a batch at a time: a row trigger that fires
-- only when what the row adds to the rollups changes (a sender's claim fires nothing).
CREATE FUNCTION report_note_delivery_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id);
  IF OLD.contact_id <> NEW.contact_id THEN
    INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER report_deliveries_updated AFTER UPDATE ON deliveries FOR EACH ROW
  WHEN ((CASE WHEN OLD.status IN ('pending', 'sending') THEN 'open' ELSE OLD.status END,
         {", ".join("OLD." + f for f in DELIVERY_FIELDS)})
        IS DISTINCT FROM
        (CASE WHEN NEW.status IN ('pending', 'sending') THEN 'open' ELSE NEW.status END,
         {", ".join("NEW." + f for f in DELIVERY_FIELDS)}))
  EXECUTE FUNCTION report_note_delivery_change();

CREATE FUNCTION report_note_contact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.id);
  RETURN NULL;
END $$;
CREATE TRIGGER report_contact_fields_changed AFTER UPDATE OF {", ".join(CONTACT_FIELDS)} ON contacts
  FOR EACH ROW WHEN (({", ".join("OLD." + f for f in CONTACT_FIELDS)}) IS DISTINCT FROM ({", ".join("NEW." + f for f in CONTACT_FIELDS)}))
  EXECUTE FUNCTION report_note_contact();

CREATE FUNCTION report_note_contact_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM new_rows;
  ELSE
    INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM old_rows;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER report_contact_tags_inserted AFTER INSERT ON contact_tags
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION report_note_contact_tags();
CREATE TRIGGER report_contact_tags_deleted AFTER DELETE ON contact_tags
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION report_note_contact_tags();
"""

SQLITE_TRIGGERS = [
    "CREATE TRIGGER report_deliveries_inserted AFTER INSERT ON deliveries BEGIN "
    "INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id); END",
    f"CREATE TRIGGER report_deliveries_updated AFTER UPDATE OF status, {', '.join(DELIVERY_FIELDS)} ON deliveries "
    "WHEN (CASE WHEN OLD.status IN ('pending', 'sending') THEN 'open' ELSE OLD.status END) IS NOT "
    "(CASE WHEN NEW.status IN ('pending', 'sending') THEN 'open' ELSE NEW.status END) OR "
    + " OR ".join(f"OLD.{f} IS NOT NEW.{f}" for f in DELIVERY_FIELDS)
    + " BEGIN INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id); "
    "INSERT INTO report_dirty_contacts (contact_id) SELECT OLD.contact_id WHERE OLD.contact_id IS NOT NEW.contact_id; END",
    "CREATE TRIGGER report_deliveries_deleted AFTER DELETE ON deliveries BEGIN "
    "INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id); END",
    f"CREATE TRIGGER report_contact_fields_changed AFTER UPDATE OF {', '.join(CONTACT_FIELDS)} ON contacts "
    "WHEN " + " OR ".join(f"OLD.{f} IS NOT NEW.{f}" for f in CONTACT_FIELDS)
    + " BEGIN INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.id); END",
    "CREATE TRIGGER report_contact_tags_inserted AFTER INSERT ON contact_tags BEGIN "
    "INSERT INTO report_dirty_contacts (contact_id) VALUES (NEW.contact_id); END",
    "CREATE TRIGGER report_contact_tags_deleted AFTER DELETE ON contact_tags BEGIN "
    "INSERT INTO report_dirty_contacts (contact_id) VALUES (OLD.contact_id); END",
]
TRIGGERS = (
    ("deliveries", "report_deliveries_inserted"),
    ("deliveries", "report_deliveries_updated"),
    ("deliveries", "report_deliveries_deleted"),
    ("contacts", "report_contact_fields_changed"),
    ("contact_tags", "report_contact_tags_inserted"),
    ("contact_tags", "report_contact_tags_deleted"),
)


def upgrade():
    op.create_table('report_rollups',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('dimension', sa.String(length=16), nullable=False),
    sa.Column('key', sa.String(length=100), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    *(sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS),
    sa.PrimaryKeyConstraint('campaign_id', 'step_id', 'day', 'dimension', 'key', name=op.f('pk_report_rollups'))
    )
    op.create_table('report_series_counts',
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('series', sa.String(length=8), nullable=False),
    sa.Column('hour', portal.models_base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('campaign_id', 'step_id', 'day', 'series', 'hour', name=op.f('pk_report_series_counts'))
    )
    op.create_table('report_counted_contacts',
    sa.Column('contact_id', BIG_ID, nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('contact_id', name=op.f('pk_report_counted_contacts'))
    )
    op.create_table('report_dirty_contacts',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('contact_id', BIG_ID, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_dirty_contacts'))
    )
    op.create_index('ix_report_dirty_contacts_contact_id', 'report_dirty_contacts', ['contact_id'])
    op.create_table('report_rollup_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('refreshed_at', portal.models_base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('generation', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_report_rollup_state'))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRESQL_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    # Everything already in the ledger is counted by the first refresh.
    op.execute("INSERT INTO report_dirty_contacts (contact_id) SELECT DISTINCT contact_id FROM deliveries")


def downgrade():
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, trigger in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        for function in ("report_note_deliveries", "report_note_delivery_change", "report_note_contact",
                         "report_note_contact_tags"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    for table in ('report_rollup_state', 'report_dirty_contacts', 'report_counted_contacts',
                  'report_series_counts', 'report_rollups'):
        op.drop_table(table)
