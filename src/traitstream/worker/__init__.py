"""The worker: Kafka records in, profiles in PostgreSQL out, exactly once."""
