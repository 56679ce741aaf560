"""The ai-runner's edges to the outside world: Replicate over HTTP, the claims bucket and the `JOBS`
stream over NATS, Prometheus counters; the only code importing their client libraries."""
