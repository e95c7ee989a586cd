"""In-memory adapters: the fakes every contract suite runs alongside the real stores."""
