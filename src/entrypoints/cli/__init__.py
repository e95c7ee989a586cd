"""User commands; heavy modules are imported inside the commands that need them."""
