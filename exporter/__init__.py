"""The exporter: GPU, RAM, swap, memory-pressure and OOM-kill metrics for Prometheus."""
