"""PostgreSQL: the profile store, API keys, and each partition's applied offset."""
