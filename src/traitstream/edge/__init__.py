"""The HTTP edge: validate, answer in each dialect's shape, produce to Kafka."""
