"""Settings, the Kafka bus, object storage, signing, the embedded stack and the CLI root."""
