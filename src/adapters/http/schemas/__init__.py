"""Wire types of the controller's REST API, one module per area (camelCase on the wire)."""
