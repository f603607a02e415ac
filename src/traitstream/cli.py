"""The ``traitstream`` command. Every setting is an environment variable and a flag."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

from traitstream import logs
from traitstream.config import CommonSettings, DevSettings, EdgeSettings, WorkerSettings
from traitstream.runtime import tune_gc

S = TypeVar("S", bound=BaseSettings)
log = logging.getLogger(__name__)


def _add_settings_flags(parser: argparse.ArgumentParser, cls: type[BaseSettings]) -> None:
    for name, info in cls.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"setting_{name}",
            default=None,
            help=f"{info.description or name} (env TRAITSTREAM_{name.upper()}, default {info.default!r})",
        )


def _settings(args: argparse.Namespace, cls: type[S]) -> S:
    given = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    return cls(**given)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def edge_app_from_env() -> Any:
    """App factory for the edge's worker processes (``uvicorn … --factory``): each
    process builds its own settings, producer and pools from the environment."""
    from traitstream.edge.app import create_app

    from_env: dict[str, Any] = {}  # every value comes from TRAITSTREAM_* variables
    settings = EdgeSettings(**from_env)
    logs.setup(settings.log_format, settings.log_level)
    return create_app(settings)


def _edge(args: argparse.Namespace) -> int:
    import uvicorn

    from traitstream.edge.app import create_app

    settings = _settings(args, EdgeSettings)
    logs.setup(settings.log_format, settings.log_level)
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.http_workers <= 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Several processes share the port; each builds its app from the environment,
    # so the flags given here travel as the variables they stand for.
    for key, value in vars(args).items():
        if key.startswith("setting_") and value is not None:
            os.environ[f"TRAITSTREAM_{key.removeprefix('setting_').upper()}"] = str(value)
    uvicorn.run("traitstream.cli:edge_app_from_env", factory=True, workers=settings.http_workers, **options)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from prometheus_client import start_http_server

    from traitstream.avro.schemas import schema_source
    from traitstream.metrics import WorkerMetrics
    from traitstream.store.database import wait_for_migrations
    from traitstream.store.profiles import ProfileStore
    from traitstream.worker.consumer import Worker, consumer_config, incremental
    from traitstream.worker.dedupe import RedisDeduper
    from traitstream.worker.dlq import DeadLetters

    settings = _settings(args, WorkerSettings)
    logs.setup(settings.log_format, settings.log_level)
    metrics = WorkerMetrics()
    start_http_server(settings.metrics_port, settings.metrics_host, registry=metrics.registry)
    wait_for_migrations(settings.database_url)
    worker = Worker(
        Consumer(
            consumer_config(
                settings.kafka_bootstrap,
                settings.group_id,
                settings.session_timeout_ms,
                settings.group_protocol,
            )
        ),
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}),
        settings.topic,
        schema_source(settings),
        RedisDeduper(settings.redis_url, settings.dedupe_ttl_s),
        ProfileStore(settings.database_url, settings.topic),
        DeadLetters(settings.kafka_bootstrap, settings.topic, settings.dlq_topic),
        metrics,
        batch_size=settings.batch_size,
        batch_wait_s=settings.batch_wait_s,
        incremental=incremental(settings.group_protocol),
    )
    log.info(
        "worker settings",
        extra={"batch_size": settings.batch_size, "group_protocol": settings.group_protocol},
    )
    worker.install_signal_handlers()
    tune_gc()
    worker.run()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from traitstream.store.database import migrate

    settings = _settings(args, CommonSettings)
    logs.setup(settings.log_format, settings.log_level)
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "the database is up to date")
    return 0


def _keys(args: argparse.Namespace) -> int:
    import psycopg

    from traitstream.store import keys
    from traitstream.store.database import migrate

    settings = _settings(args, CommonSettings)
    migrate(settings.database_url)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if args.keys_command == "create":
            try:
                scopes = keys.check_scopes([s.strip() for s in args.scopes.split(",") if s.strip()])
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            secret = keys.new_secret(args.prefix)
            key = keys.register(
                conn,
                secret,
                args.workspace,
                scopes,
                website_id=args.website_id,
                description=args.description,
            )
            print(secret)
            print(
                f"key id {key.key_id}, workspace {key.workspace_id}, scopes {','.join(sorted(scopes))}"
                " (the key is shown once; only its hash is stored)",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            for info in keys.list_keys(conn, args.workspace):
                state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
                print(
                    f"{info.key.key_id}\t{info.key.workspace_id}\t{','.join(sorted(info.key.scopes))}"
                    f"\t{state}\t{info.description or ''}"
                )
        elif args.keys_command == "revoke":
            if not keys.revoke(conn, args.key_id):
                print(f"error: no active key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from traitstream.worker.replay import replay

    settings = _settings(args, CommonSettings)
    logs.setup(settings.log_format, settings.log_level)
    count = replay(settings, idle_s=args.idle_seconds, limit=args.limit)
    print(f"replayed {count} record(s) from {settings.dlq_topic} to {settings.topic}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from traitstream import devstack

    settings = _settings(args, DevSettings)
    logs.setup(settings.log_format, settings.log_level)
    return devstack.run(settings)


def _bench_runner() -> Any:
    """The bench's runner, from the source checkout this package runs from.

    The bench is a development tool and lives beside the tests (``tests/bench``),
    outside the package: an editable install finds it at the checkout's root, an
    installed wheel has none."""
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "tests" / "bench" / "runner.py").is_file():
        raise SystemExit("traitstream bench runs from a source checkout: make bench")
    if sys.path[:1] != [str(root)]:
        sys.path.insert(0, str(root))  # before any other top-level ``tests``
    return importlib.import_module("tests.bench.runner")


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    runner = _bench_runner()
    settings = _settings(args, CommonSettings)
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


def _bench_parser(commands: Any) -> None:
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
        type=_positive,
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
    bench.set_defaults(run=_bench, profile_given=False)
    _add_settings_flags(bench, CommonSettings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="traitstream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, helptext: str, cls: type[BaseSettings], run: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=helptext)
        _add_settings_flags(sub, cls)
        sub.set_defaults(run=run)
        return sub

    dev = command(
        "dev", "run the whole local pipeline (broker, migrations, edge, workers)", DevSettings, _dev
    )
    dev.add_argument("--api-key", dest="setting_dev_api_key", default=None, help="alias of --dev-api-key")
    command("edge", "run the HTTP edge", EdgeSettings, _edge)
    command("worker", "run one worker of the consumer group", WorkerSettings, _worker)
    command("migrate", "create the database if missing and apply migrations", CommonSettings, _migrate)

    keys_parser = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; prints it once")
    create.add_argument("--workspace", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated scopes")
    create.add_argument("--website-id", default=None, help="DataFast website the key belongs to")
    create.add_argument("--prefix", default="ts_", help="key prefix, e.g. df_ or dft_ (default ts_)")
    create.add_argument("--description", default=None)
    listing = key_commands.add_parser("list", help="list keys (never the secrets)")
    listing.add_argument("--workspace", default=None)
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for sub in (create, listing, revoke):
        _add_settings_flags(sub, CommonSettings)
    keys_parser.set_defaults(run=_keys)

    dlq = commands.add_parser("dlq", help="dead-letter topic tools")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    replay = dlq_commands.add_parser("replay", help="send dead-lettered records back to the topic")
    replay.add_argument(
        "--idle-seconds", type=float, default=5.0, help="stop after this long with nothing new"
    )
    replay.add_argument("--limit", type=int, default=None, help="replay at most this many records")
    _add_settings_flags(replay, CommonSettings)
    replay.set_defaults(run=_dlq)
    _bench_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))
