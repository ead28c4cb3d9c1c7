-- The hub database as create_all made it on PostgreSQL: the registry's first hub (commit caf758c): sites and devices only.
-- Generated from that commit's models with SQLAlchemy's DDL compiler; never edited by hand.

CREATE TABLE sites (
	id VARCHAR(64) NOT NULL,
	name VARCHAR(200) NOT NULL,
	ward VARCHAR(64),
	lat FLOAT,
	lon FLOAT,
	updated TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_sites_ward ON sites (ward);

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
	first_seen TIMESTAMP WITH TIME ZONE NOT NULL,
	updated TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(site) REFERENCES sites (id)
);

CREATE INDEX ix_devices_kind ON devices (kind);

CREATE INDEX ix_devices_site ON devices (site);
