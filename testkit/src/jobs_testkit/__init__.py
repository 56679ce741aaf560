"""Private test kit: throwaway NATS and Postgres servers and pytest fixtures over them."""
