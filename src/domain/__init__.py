"""Opsicle's pure core: models, rules, ports and use cases, with no I/O."""
