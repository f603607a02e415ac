"""``traitstream bench``: throughput and latency of the whole pipeline, measured
against the raw limits of the same machine (PostgreSQL, the broker, Redis).

``runner`` runs the phases, ``load`` is the load generator (a separate process),
``limits`` measures the raw limits, ``stats`` holds the pure arithmetic, and
``report`` writes the JSON results, the summary and the chart.
"""
