"""Password hashing, token signing and secret helpers."""
