"""Mailers that hand email to something other than SMTP."""
