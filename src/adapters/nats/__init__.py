"""NATS JetStream adapters."""
