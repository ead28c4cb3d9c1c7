"""Alerts: rules from a YAML file, evaluated on the ingest observer and health transitions; one open alert per
(subject, rule), lifecycle firing -> acknowledged -> resolved, webhook notifications with a delivery log."""
