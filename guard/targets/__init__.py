"""guard.targets: what the guard drives: HTTP workers and the cgroup worker."""
