"""The guard: observes memory signals, throttles/pauses/frees the worker, and leases headroom to tests."""
