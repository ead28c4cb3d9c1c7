"""The first schema: the hub database as the last hub before migrations made it (``create_all`` of its models).

Revision 0001, the first. Its tables are written out here, frozen, not taken from the models: the models move on
with later revisions, this revision must not.

A database made before migrations has no ``alembic_version`` table, so Alembic runs this revision on it too.
Such a database holds some of this schema, depending on the hub that made it: the registry's first hub made
only ``sites`` and ``devices``; health transitions, alerts, webhook deliveries, commands and API tokens came
next; then the index on ``alerts.resolved_at``, the table ``device_moves`` and the column ``api_tokens.expires``
(the index and the column added to existing tables by the start-up code of the hubs that brought them). Tables,
indexes and that column are therefore created only where missing (``checkfirst``): on an empty database this
makes the whole schema, on an older one what it lacks, and every database leaves this revision with the same
schema. No other table or column of the first schema ever changed shape, so nothing else can be missing
(tests/integration/hub/registry_schemas/ keeps the older shapes, upgraded by the tests).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TZ = sa.DateTime(timezone=True)
FIRST = sa.MetaData()

sa.Table(
    "sites",
    FIRST,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("ward", sa.String(64), index=True),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("updated", _TZ, nullable=False),
)
sa.Table(
    "devices",
    FIRST,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False, index=True),
    sa.Column("profile", sa.String(128), nullable=False),
    sa.Column("driver", sa.String(64), nullable=False),
    sa.Column("site", sa.String(64), sa.ForeignKey("sites.id"), index=True),
    sa.Column("gateway", sa.String(64)),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("installed", sa.Date),
    sa.Column("interval_s", sa.Float),
    sa.Column("inactivity_s", sa.Float),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("announced", sa.JSON),
    sa.Column("inventory", sa.JSON),
    sa.Column("conflicts", sa.JSON, nullable=False),
    sa.Column("first_seen", _TZ, nullable=False),
    sa.Column("updated", _TZ, nullable=False),
)
sa.Table(
    "device_moves",
    FIRST,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("device", sa.String(64), nullable=False, index=True),
    sa.Column("from_site", sa.String(64)),
    sa.Column("from_gateway", sa.String(64)),
    sa.Column("to_site", sa.String(64)),
    sa.Column("to_gateway", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("by", sa.String(100), nullable=False),
    sa.Column("reason", sa.String(300), nullable=False),
    sa.Column("at", _TZ, nullable=False, index=True),
)
sa.Table(
    "health_transitions",
    FIRST,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("key", sa.String(130), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("gateway", sa.String(64), nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("old", sa.String(16), nullable=False),
    sa.Column("new", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(600), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("at", _TZ, nullable=False),
    sa.Index("ix_health_transitions_key_ts", "key", "ts_ms"),
)
sa.Table(
    "alerts",
    FIRST,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(64), nullable=False, index=True),
    sa.Column("subject", sa.String(130), nullable=False, index=True),
    sa.Column("subject_type", sa.String(16), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("gateway", sa.String(64), nullable=False),
    sa.Column("ward", sa.String(64), index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("message", sa.String(600), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("open_key", sa.String(200), unique=True),
    sa.Column("opened_at", _TZ, nullable=False, index=True),
    sa.Column("acked_at", _TZ),
    sa.Column("acked_by", sa.String(100)),
    sa.Column("resolved_at", _TZ, index=True),
    sa.Column("resolved_by", sa.String(100)),
    sa.Column("resolution", sa.String(300)),
)
sa.Table(
    "webhook_deliveries",
    FIRST,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.Integer, nullable=False, index=True),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.String(500), nullable=False),
    sa.Column("duration_ms", sa.BigInteger, nullable=False),
    sa.Column("at", _TZ, nullable=False),
)
sa.Table(
    "commands",
    FIRST,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("device", sa.String(64), nullable=False, index=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("gateway", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=False),
    sa.Column("requested_by", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.String(1024), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created", _TZ, nullable=False),
    sa.Column("finished", _TZ),
    sa.Column("duration_ms", sa.Float),
)
sa.Table(
    "api_tokens",
    FIRST,
    sa.Column("id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("wards", sa.JSON),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created", _TZ, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("revoked", _TZ),
    # Added last to an existing table (a token without it never expires).
    sa.Column("expires", _TZ),
)

#: Columns added to a table after the table itself, which ``checkfirst`` does not see: (table, column).
ADDED_LATER = (("api_tokens", "expires"),)


def upgrade() -> None:
    bind = op.get_bind()
    FIRST.create_all(bind, checkfirst=True)
    # create_all makes a table's indexes only with the table; an older table may lack one added after it.
    for table in FIRST.sorted_tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table_name, column_name in ADDED_LATER:
        if column_name not in {c["name"] for c in inspector.get_columns(table_name)}:
            column = FIRST.tables[table_name].c[column_name]
            op.add_column(table_name, sa.Column(column_name, column.type, nullable=True))


def downgrade() -> None:
    FIRST.drop_all(op.get_bind())
