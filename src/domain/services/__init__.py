"""Use cases: one module per area, depending on ports only."""
