"""Order routing: the venue interface, the paper venue and adapters for real brokers."""
