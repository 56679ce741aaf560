"""A stand-in for Replicate's HTTP API: predictions, signed webhooks and fault knobs."""
