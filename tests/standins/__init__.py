"""Stand-ins for services tests cannot reach, checking requests as the real ones do."""
