"""guard.protect: protection at kernel speed: the fast path, the freezer, the grower choice."""
