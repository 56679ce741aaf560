"""The only code of `jobsctl` that touches NATS, Postgres or Replicate."""
