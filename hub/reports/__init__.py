"""Reports from the hub's own records: camera availability per month (docs/reports.md)."""
