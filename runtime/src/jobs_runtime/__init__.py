"""What every service shares: settings, NATS, the consumer loop, the admin port, logs, shutdown."""
