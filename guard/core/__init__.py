"""guard.core: deciding: the manager, the pure policy, leases and the queue, the protection owner, the view."""
