"""guard.sources: where the signals come from: the exporter's /metrics or Prometheus."""
