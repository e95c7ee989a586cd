"""Slack Web API: Block Kit approval requests, code modals and signed interaction payloads."""
