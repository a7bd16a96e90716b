"""guard.http: what readers see: routes, views, the status page, /metrics."""
