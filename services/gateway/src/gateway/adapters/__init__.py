"""The gateway's edges: HTTP in front, NATS behind; the only code touching either."""
