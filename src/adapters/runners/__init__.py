"""Runner adapters: phases as local processes (sandboxed with bubblewrap) or Docker containers."""
