"""The only code of webhook-ingest that touches NATS or HTTP."""
