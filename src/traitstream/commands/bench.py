"""``traitstream bench``: the benchmark, from the source checkout this package runs
from (it lives in ``tests/bench``, outside the package)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from typing import Any

from traitstream import logs
from traitstream.commands.options import Commands, add_settings_flags, positive, settings_from
from traitstream.config import CommonSettings


def bench_runner() -> Any:
    """The bench's runner, from the source checkout this package runs from.

    The bench is a development tool and lives beside the tests (``tests/bench``),
    outside the package: an editable install finds it at the checkout's root, an
    installed wheel has none."""
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    if not (root / "tests" / "bench" / "runner.py").is_file():
        raise SystemExit("traitstream bench runs from a source checkout: make bench")
    if sys.path[:1] != [str(root)]:
        sys.path.insert(0, str(root))  # before any other top-level ``tests``
    return importlib.import_module("tests.bench.runner")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    runner = bench_runner()
    settings = settings_from(args, CommonSettings)
    logs.setup("text" if settings.log_format == "auto" else settings.log_format, logging.WARNING)
    options = runner.BenchOptions(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        # Only an explicit flag points the bench at an existing broker.
        kafka_bootstrap=args.setting_kafka_bootstrap,
        soak_s=args.soak_seconds,
        soak_rate=args.soak_rate,
        workers=args.workers,
        edge_processes=args.edge_processes,
        partitions=args.partitions,
        profile=args.profile,
        out_dir=Path(args.out),
        docs_chart=Path(args.docs_chart) if args.docs_chart else None,
        max_load=args.max_load,
        max_load_wait_s=args.max_load_wait_seconds,
    )
    if args.quick:
        options = runner.quick(options)
        if args.profile_given:
            options = replace(options, profile=args.profile)
    if args.phase_seconds is not None:
        options = replace(options, phase_s=args.phase_seconds)
    if args.latency_seconds is not None:
        options = replace(options, latency_s=args.latency_seconds)
    if args.backlog is not None:
        options = replace(options, backlog=args.backlog)
    return int(runner.main(options))


class _Given(argparse.BooleanOptionalAction):
    """Like BooleanOptionalAction, remembering that the flag was given."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace.profile_given = True


def register(commands: Commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure throughput and latency against this machine's raw limits",
        description="Start a stack of its own (a broker on a free port unless --kafka-bootstrap is "
        "given, a scratch database, the edge, the workers), load it from a separate process, and "
        "write bench-results/<date>.json and a chart.",
    )
    bench.add_argument("--quick", action="store_true", help="short phases: about a minute in all")
    bench.add_argument(
        "--soak-seconds",
        type=float,
        default=120.0,
        help="soak length, watching worker memory (default 120; 600 for ten minutes)",
    )
    bench.add_argument(
        "--soak-rate",
        type=positive,
        default=None,
        help="identifies per second in the soak (default: half the end-to-end rate)",
    )
    bench.add_argument(
        "--phase-seconds", type=float, default=None, help="length of each load phase (default 20, quick 4)"
    )
    bench.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="steady load at half the maximum rate for end-to-end latency (default 30, quick 5)",
    )
    bench.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="identifies queued for the drain (default 100000, quick 15000)",
    )
    bench.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    bench.add_argument("--edge-processes", type=int, default=4, help="edge processes (default 4)")
    bench.add_argument("--partitions", type=int, default=12, help="partitions of the bench topic")
    bench.add_argument(
        "--profile",
        action=_Given,
        default=True,
        help="profile the edge and workers with py-spy after the measurements (default on; off with --quick)",
    )
    bench.add_argument("--out", default="bench-results", help="where results go (default bench-results)")
    bench.add_argument(
        "--docs-chart", default=None, help="also write a small chart here (e.g. docs/bench.png)"
    )
    bench.add_argument(
        "--max-load",
        type=float,
        default=None,
        help="first wait until the 1-minute load average is below this",
    )
    bench.add_argument(
        "--max-load-wait-seconds",
        type=float,
        default=1200.0,
        help="longest wait for --max-load (default 1200)",
    )
    bench.set_defaults(run=run, profile_given=False)
    add_settings_flags(bench, CommonSettings)
