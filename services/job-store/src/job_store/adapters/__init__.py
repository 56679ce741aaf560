"""The only code touching Postgres and NATS: the ports of `job_store.ports`, implemented."""
