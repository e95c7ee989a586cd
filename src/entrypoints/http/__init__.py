"""HTTP apps: one Starlette app factory per role, sharing probes, metrics and error handling."""
