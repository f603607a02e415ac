"""traitstream: identify ingestion with order-safe, exactly-once profiles."""

__version__ = "0.1.0"
