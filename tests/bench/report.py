"""The bench's outputs: the results as JSON, a summary for the terminal, the
targets met or missed, and a chart (throughput against the limits, and latency)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool | None
    """None: not measured in this run."""


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _pct(value: float | None) -> str:
    # Three places: at two, a ratio of 0.246 printed as the 0.25 it misses.
    return "n/a" if value is None else f"{value:.3f}"


def _latency_lines(paced: dict[str, Any], what: str) -> list[str]:
    latency = paced.get("e2e_latency_s", {})
    within = latency.get("within_1s")
    lines = [
        f"end-to-end latency at {_fmt(paced.get('rate_target'))}/s ({what}, "
        f"{_fmt(paced.get('identifies_per_request'))} identifies a request): "
        f"p50 {_fmt(latency.get('p50'), 3)} s   p99 {_fmt(latency.get('p99'), 3)} s   "
        f"applied within 1 s {_fmt(None if within is None else within * 100, 2, '%')}"
    ]
    windows = paced.get("e2e_windows")
    if windows:
        p99s = "  ".join(_fmt(w.get("p99"), 2) for w in windows)
        lines.append(f"  p99 in each window of the phase: {p99s}")
    return lines


def targets(results: dict[str, Any]) -> list[Target]:
    f = results["figures"]
    e2e = f.get("end_to_end", {})
    batched = f.get("batched_ingestion", {})
    single = f.get("single_identify", {})
    steady = f.get("steady", {})
    soak = f.get("soak", {})
    found = [
        Target(
            "end-to-end applied rate ≥ 0.25 of the PostgreSQL bulk upsert",
            "≥ 0.25",
            f"{_pct(e2e.get('ratio'))} ({_fmt(e2e.get('identifies_per_s'))}/s)",
            None if e2e.get("ratio") is None else e2e["ratio"] >= 0.25,
        ),
        Target(
            "batched ingestion acknowledged",
            "≥ 100,000 identifies/s",
            f"{_fmt(batched.get('identifies_per_s'))}/s",
            None if batched.get("identifies_per_s") is None else batched["identifies_per_s"] >= 100_000,
        ),
    ]
    for name, figure in (
        ("single-identify requests, edge tier (workers stopped)", f.get("single_identify_edge", {})),
        ("single-identify requests, workers applying on the same cores", single),
    ):
        rps, p99 = figure.get("requests_per_s"), figure.get("latency_ms", {}).get("p99")
        found.append(
            Target(
                name,
                "≥ 5,000 req/s, p99 < 20 ms",
                f"{_fmt(rps)} req/s, p99 {_fmt(p99, 1)} ms",
                None if rps is None or p99 is None else rps >= 5_000 and p99 < 20,
            )
        )
    e2e_p99 = steady.get("e2e_latency_s", {}).get("p99")
    found.append(
        Target(
            "end-to-end p99 at half the maximum rate",
            "< 1 s",
            f"{_fmt(e2e_p99, 3)} s at {_fmt(steady.get('rate_target'))}/s",
            None if e2e_p99 is None else e2e_p99 < 1.0,
        )
    )
    growth = soak.get("worker_rss_growth")
    found.append(
        Target(
            f"worker memory flat over the soak ({_fmt(soak.get('seconds'))} s)",
            "RSS growth < 10%",
            "n/a" if growth is None else f"{growth * 100:+.1f}% ({soak.get('worker_rss_mb')})",
            None if growth is None else growth < 0.10,
        )
    )
    return found


def summary(results: dict[str, Any]) -> str:
    f, limits = results["figures"], results["limits"]
    rows = [("figure", "measured", "limit that bounds it", "ratio")]

    def add(label: str, figure: dict[str, Any], key: str, unit: str) -> None:
        bound = figure.get("bound_by")
        limit = limits.get(bound, {}) if bound else {}
        rows.append(
            (
                label,
                f"{_fmt(figure.get(key))} {unit}",
                f"{bound} {_fmt(limit.get('rate'))}/s" if bound else "",
                _pct(figure.get("ratio")),
            )
        )

    if "batched_ingestion" in f:
        add(
            "batched ingestion (4 clients, 500 each; workers stopped)",
            f["batched_ingestion"],
            "identifies_per_s",
            "identifies/s",
        )
    if "end_to_end" in f:
        add("end-to-end applied (change stream on)", f["end_to_end"], "identifies_per_s", "identifies/s")
        if "acknowledged" in f["end_to_end"]:
            add(
                "  acknowledged meanwhile (workers running)",
                f["end_to_end"]["acknowledged"],
                "identifies_per_s",
                "identifies/s",
            )
    if "end_to_end_changes_off" in f:
        add(
            "end-to-end applied (change stream off)",
            f["end_to_end_changes_off"],
            "identifies_per_s",
            "identifies/s",
        )
    if "single_identify_edge" in f:
        add(
            "single identifies (16 clients; workers stopped)",
            f["single_identify_edge"],
            "requests_per_s",
            "req/s",
        )
    if "single_identify" in f:
        add(
            "single identifies (16 clients; workers running)", f["single_identify"], "requests_per_s", "req/s"
        )
    if "drain" in f:
        add("worker drain (edge idle)", f["drain"], "identifies_per_s", "identifies/s")
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    out = ["", "traitstream bench: " + results["started_at"], ""]
    out += ["  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)) for row in rows]
    steady = f.get("steady", {})
    out.append("")
    for key, label in (("single_identify_edge", "workers stopped"), ("single_identify", "workers running")):
        latency = f.get(key, {}).get("latency_ms", {})
        out.append(
            f"single-identify latency, {label}  p50 {_fmt(latency.get('p50'), 2)} ms   "
            f"p99 {_fmt(latency.get('p99'), 2)} ms"
        )
    out += _latency_lines(steady, "half the maximum")
    if "steady_end_to_end_requests" in f:
        out += _latency_lines(f["steady_end_to_end_requests"], "the same rate")
    soak = f.get("soak", {})
    if soak:
        out.append(
            f"soak {_fmt(soak.get('seconds'))} s at {_fmt(soak.get('rate_sent'))}/s sent: end-to-end p50 "
            f"{_fmt(soak.get('e2e_latency_s', {}).get('p50'), 3)} s   "
            f"p99 {_fmt(soak.get('e2e_latency_s', {}).get('p99'), 3)} s; worker RSS "
            f"{soak.get('worker_rss_mb', {}).get('start')} → {soak.get('worker_rss_mb', {}).get('end')} MB"
        )
    out += [
        "",
        "raw limits of this machine:",
    ]
    for name, limit in limits.items():
        out.append(f"  {name:<16} {_fmt(limit['rate']):>10}/s   {limit['what']}")
    out += ["", "targets:"]
    for target in targets(results):
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[target.met]
        out.append(f"  [{mark}] {target.name}: {target.measured} (wanted {target.wanted})")
    machine = results["machine"]
    out += [
        "",
        f"load average {machine['load_average_start']:.2f} at the start, "
        f"{machine['load_average_end']:.2f} at the end; {machine['cpus']} CPUs",
    ]
    return "\n".join(out) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def chart(results: dict[str, Any], path: Path, *, small: bool = False) -> bool:
    """Throughput against the limits, and latency; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart (pip install -e '.[bench]')")
        return False
    f, limits = results["figures"], results["limits"]
    bars: list[tuple[str, float, str]] = []
    goals: list[tuple[int, float]] = []
    pg_rate = limits.get("postgres_upsert", {}).get("rate")
    for key, label, field, goal in (
        ("batched_ingestion", "batched\ningestion", "identifies_per_s", 100_000.0),
        ("end_to_end", "end-to-end\napplied", "identifies_per_s", 0.25 * pg_rate if pg_rate else None),
        ("single_identify_edge", "single\n(workers\nstopped)", "requests_per_s", 5_000.0),
        ("single_identify", "single\n(workers\nrunning)", "requests_per_s", 5_000.0),
        ("drain", "worker\ndrain", "identifies_per_s", None),
    ):
        if f.get(key, {}).get(field) is not None:
            if goal is not None:
                goals.append((len(bars), goal))
            bars.append((label, float(f[key][field]), "#3b6ea8"))
    for name, label in (
        ("postgres_upsert", "PG bulk\nupsert"),
        ("broker_produce", "broker\nproduce"),
        ("broker_consume", "broker\nconsume"),
        ("redis_dedupe", "Redis\nSET NX"),
    ):
        if name in limits:
            bars.append((label, float(limits[name]["rate"]), "#b0b0b0"))
    size, dpi = ((9.5, 3.8), 80) if small else ((11, 4.5), 110)
    fig, (left, right) = plt.subplots(1, 2, figsize=size, gridspec_kw={"width_ratios": [2.2, 1]})
    left.bar(range(len(bars)), [b[1] for b in bars], color=[b[2] for b in bars])
    left.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("per second (log)")
    left.set_title("traitstream (blue) against the machine's raw limits (grey); targets dashed", fontsize=9)
    for index, (_label, value, _color) in enumerate(bars):
        left.annotate(f"{value:,.0f}", (index, value), ha="center", va="bottom", fontsize=7)
    for index, goal in goals:
        left.hlines(goal, index - 0.4, index + 0.4, colors="#c0392b", linestyles="dashed", linewidth=1.2)
    if goals:
        left.annotate("target", (goals[0][0] + 0.42, goals[0][1]), color="#c0392b", fontsize=6, va="center")
    single = f.get("single_identify", {}).get("latency_ms", {})
    steady = f.get("steady", {}).get("e2e_latency_s", {})
    labels = ["single p50\n(workers\nrunning)", "single p99\n(workers\nrunning)", "e2e\np50", "e2e\np99"]
    values = [
        single.get("p50"),
        single.get("p99"),
        None if steady.get("p50") is None else steady["p50"] * 1000,
        None if steady.get("p99") is None else steady["p99"] * 1000,
    ]
    right.bar(range(4), [v or 0 for v in values], color=["#6a9f58", "#6a9f58", "#c9803b", "#c9803b"])
    right.set_xticks(range(4), labels, fontsize=7)
    right.set_ylabel("milliseconds (log)")
    right.set_title("latency (e2e at half the max rate)", fontsize=9)
    for index, value in enumerate(values):
        if value is not None:
            right.annotate(f"{value:,.1f}", (index, value), ha="center", va="bottom", fontsize=7)
    # The latency targets: single-identify p99 under 20 ms, end-to-end p99 under 1 s.
    right.hlines([20.0, 1000.0], [0.6, 2.6], [1.4, 3.4], colors="#c0392b", linestyles="dashed", linewidth=1.2)
    right.set_yscale("log")
    fig.suptitle(
        f"{results['started_at']} · {results['machine']['cpus']} CPUs · "
        f"load avg {results['machine']['load_average_start']:.2f}",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True
