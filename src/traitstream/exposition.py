"""Reading the Prometheus text format: what the local stack, the bench and the
tests learn from the processes' own /metrics. Pure functions over text."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def labels_of(text: str) -> dict[str, str]:
    """``a="1",b="2"`` as a dict."""
    return dict(_LABEL.findall(text))


def parse_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of the metric ``name`` in a Prometheus text exposition, with its labels."""
    found = []
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = _SAMPLE.match(line)
        if match is None or match[1] != name:
            continue
        labels = labels_of(match[2] or "")
        found.append((labels, float(match[3])))
    return found


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    return sum(
        value
        for found, value in parse_samples(text, name)
        if all(found.get(k) == v for k, v in labels.items())
    )
