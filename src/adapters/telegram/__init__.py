"""Telegram Bot API: approval requests with buttons, code prompts, and the update poller."""
