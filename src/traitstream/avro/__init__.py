"""The Avro form of the identify event (schema ``schemas/identify/v1.avsc``)."""
