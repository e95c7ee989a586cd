"""The controller's endpoints, one module per area, each with ``register(api, platform)``."""
