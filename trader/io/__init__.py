"""The trader's edges: the durable outbox, the lake writer and the HTTP API."""
