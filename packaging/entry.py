"""Entry script of the one-file executable."""

from entrypoints.main import run

run()
