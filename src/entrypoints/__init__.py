"""Entry points: the CLI, the HTTP apps of each role and their composition roots."""
