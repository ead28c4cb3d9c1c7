-- The hub database as create_all made it on SQLite: the last hub before migrations (its final shape since commit 9a98134); revision 0001 of hub/registry/migrations/ is this schema.
-- Generated from that commit's models with SQLAlchemy's DDL compiler; never edited by hand.

CREATE TABLE alerts (
	id INTEGER NOT NULL,
	rule VARCHAR(64) NOT NULL,
	subject VARCHAR(130) NOT NULL,
	subject_type VARCHAR(16) NOT NULL,
	site VARCHAR(64) NOT NULL,
	gateway VARCHAR(64) NOT NULL,
	ward VARCHAR(64),
	kind VARCHAR(32) NOT NULL,
	severity VARCHAR(16) NOT NULL,
	state VARCHAR(16) NOT NULL,
	message VARCHAR(600) NOT NULL,
	value FLOAT,
	open_key VARCHAR(200),
	opened_at DATETIME NOT NULL,
	acked_at DATETIME,
	acked_by VARCHAR(100),
	resolved_at DATETIME,
	resolved_by VARCHAR(100),
	resolution VARCHAR(300),
	PRIMARY KEY (id),
	UNIQUE (open_key)
);

CREATE INDEX ix_alerts_opened_at ON alerts (opened_at);

CREATE INDEX ix_alerts_resolved_at ON alerts (resolved_at);

CREATE INDEX ix_alerts_rule ON alerts (rule);

CREATE INDEX ix_alerts_state ON alerts (state);

CREATE INDEX ix_alerts_subject ON alerts (subject);

CREATE INDEX ix_alerts_ward ON alerts (ward);

CREATE TABLE api_tokens (
	id VARCHAR(12) NOT NULL,
	name VARCHAR(100) NOT NULL,
	role VARCHAR(16) NOT NULL,
	wards JSON,
	secret_sha256 VARCHAR(64) NOT NULL,
	created DATETIME NOT NULL,
	created_by VARCHAR(100) NOT NULL,
	revoked DATETIME,
	expires DATETIME,
	PRIMARY KEY (id)
);

CREATE TABLE commands (
	id VARCHAR(64) NOT NULL,
	device VARCHAR(64) NOT NULL,
	site VARCHAR(64) NOT NULL,
	gateway VARCHAR(64) NOT NULL,
	action VARCHAR(64) NOT NULL,
	params JSON NOT NULL,
	timeout_s FLOAT NOT NULL,
	requested_by VARCHAR(100) NOT NULL,
	status VARCHAR(16) NOT NULL,
	detail VARCHAR(1024) NOT NULL,
	result JSON NOT NULL,
	created DATETIME NOT NULL,
	finished DATETIME,
	duration_ms FLOAT,
	PRIMARY KEY (id)
);

CREATE INDEX ix_commands_device ON commands (device);

CREATE TABLE device_moves (
	id INTEGER NOT NULL,
	device VARCHAR(64) NOT NULL,
	from_site VARCHAR(64),
	from_gateway VARCHAR(64),
	to_site VARCHAR(64),
	to_gateway VARCHAR(64) NOT NULL,
	source VARCHAR(16) NOT NULL,
	"by" VARCHAR(100) NOT NULL,
	reason VARCHAR(300) NOT NULL,
	at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_device_moves_at ON device_moves (at);

CREATE INDEX ix_device_moves_device ON device_moves (device);

CREATE TABLE health_transitions (
	id INTEGER NOT NULL,
	entity VARCHAR(16) NOT NULL,
	"key" VARCHAR(130) NOT NULL,
	site VARCHAR(64) NOT NULL,
	gateway VARCHAR(64) NOT NULL,
	device VARCHAR(64) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	old VARCHAR(16) NOT NULL,
	new VARCHAR(16) NOT NULL,
	reason VARCHAR(600) NOT NULL,
	ts_ms BIGINT NOT NULL,
	at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_health_transitions_key_ts ON health_transitions ("key", ts_ms);

CREATE TABLE sites (
	id VARCHAR(64) NOT NULL,
	name VARCHAR(200) NOT NULL,
	ward VARCHAR(64),
	lat FLOAT,
	lon FLOAT,
	updated DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_sites_ward ON sites (ward);

CREATE TABLE webhook_deliveries (
	id INTEGER NOT NULL,
	alert_id INTEGER NOT NULL,
	event VARCHAR(16) NOT NULL,
	url VARCHAR(2000) NOT NULL,
	attempt INTEGER NOT NULL,
	ok BOOLEAN NOT NULL,
	status_code INTEGER,
	error VARCHAR(500) NOT NULL,
	duration_ms BIGINT NOT NULL,
	at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_webhook_deliveries_alert_id ON webhook_deliveries (alert_id);

CREATE TABLE devices (
	id VARCHAR(64) NOT NULL,
	kind VARCHAR(32) NOT NULL,
	profile VARCHAR(128) NOT NULL,
	driver VARCHAR(64) NOT NULL,
	site VARCHAR(64),
	gateway VARCHAR(64),
	lat FLOAT,
	lon FLOAT,
	installed DATE,
	interval_s FLOAT,
	inactivity_s FLOAT,
	tags JSON NOT NULL,
	announced JSON,
	inventory JSON,
	conflicts JSON NOT NULL,
	first_seen DATETIME NOT NULL,
	updated DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(site) REFERENCES sites (id)
);

CREATE INDEX ix_devices_kind ON devices (kind);

CREATE INDEX ix_devices_site ON devices (site);
