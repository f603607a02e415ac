"""What each compiled module saves, per identify: ``python -m tests.bench.native_ab``.

Runs the edge's per-identify work (a Thrivestack request parsed into events, each
encoded as its Avro record) and the workers' (``tests.bench.apply``: decode, plan,
merge and the database client against a scratch database) in child processes,
each child with every compiled module, with none, or with all but one. A module is
kept out of a child by failing its import, which is what an installation without
it sees; the child then runs the Python path instead.

Each child reports the CPU time of its own process (user plus system, from
``/proc/self/stat``) over a fixed workload, divided by the identifies it handled.
Variants run interleaved, round after round, and the medians are reported: on a
shared machine only CPU time per identify compares, never wall-clock time.
"""

from __future__ import annotations

import argparse
import importlib.abc
import os
import statistics
import subprocess
import sys
import uuid
from typing import Any

import orjson

MODULES = {
    "merge": "traitstream.compiled._merge",
    "v1c": "traitstream.compiled._v1c",
    "checks": "traitstream.compiled._checks",
}
SIDES = {"edge": ("v1c", "checks", "merge"), "worker": ("v1c", "merge")}
"""The modules each side calls on its hot path."""


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname in self.names:
            raise ImportError(f"{fullname} is kept out of this measurement")


def _edge(identifies: int, passes: int) -> float:
    from tests.bench import procs, workload
    from traitstream.avro import codec
    from traitstream.avro.schemas import LocalSchemas
    from traitstream.dialects import thrivestack
    from traitstream.dialects.common import Envelope
    from traitstream.runtime import tune_gc

    bodies = workload.bodies(max(1, identifies // 500), min(500, identifies), 100_000, seed=9)
    schema_id = LocalSchemas().writer_id

    def one_pass(number: int) -> int:
        count = 0
        for index, body in enumerate(bodies):
            envelope = Envelope("bench", str(uuid.UUID(int=number << 32 | index)), 1_700_000_000_000 + index)
            for event in thrivestack.parse(body, envelope):
                codec.encode(event, schema_id)
                event.partition_key  # noqa: B018 - the edge computes it for every record
                count += 1
        return count

    one_pass(0)
    tune_gc()
    before = procs.cpu_seconds(os.getpid())
    count = sum(one_pass(number) for number in range(1, passes + 1))
    return (procs.cpu_seconds(os.getpid()) - before) / count * 1e6


def _worker(identifies: int, passes: int) -> float:
    from tests.bench import apply
    from tests.bench.stack import create_database, drop_database
    from traitstream.config import CommonSettings
    from traitstream.store.database import migrate

    no_args: dict[str, Any] = {}
    server = CommonSettings(**no_args).database_url
    name = f"traitstream_ab_{uuid.uuid4().hex[:8]}"
    try:
        url = create_database(server, name)
        migrate(url)
        cost = apply.measure(url, identifies, passes)
    finally:
        drop_database(server, name)
    return cost.process_us


def child(side: str, without: list[str], identifies: int, passes: int) -> None:
    sys.meta_path.insert(0, _Refuse({MODULES[name] for name in without}))
    us = _edge(identifies, passes) if side == "edge" else _worker(identifies, passes)
    sys.stdout.write(orjson.dumps({"us": us}).decode() + "\n")


def _run(side: str, without: tuple[str, ...], identifies: int, passes: int) -> float:
    from tests.bench import child_env

    argv = [sys.executable, "-m", "tests.bench.native_ab", "--child", side, "--identifies", str(identifies)]
    argv += ["--passes", str(passes), "--without", ",".join(without)]
    env = child_env()
    env.pop("TRAITSTREAM_IMPL", None)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=900)
    us: float = orjson.loads(done.stdout.strip().splitlines()[-1])["us"]
    return us


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.native_ab", description=__doc__)
    parser.add_argument("--side", choices=sorted(SIDES), action="append", help="default: both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--identifies", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--child", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--without", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, [n for n in args.without.split(",") if n], args.identifies, args.passes)
        return 0
    results: dict[str, Any] = {}
    for side in args.side or sorted(SIDES):
        variants: dict[str, tuple[str, ...]] = {"all compiled": (), "none compiled": tuple(MODULES)}
        variants |= {f"without {name}": (name,) for name in SIDES[side]}
        samples: dict[str, list[float]] = {label: [] for label in variants}
        for number in range(args.rounds):
            order = list(variants) if number % 2 == 0 else list(reversed(variants))
            for label in order:
                samples[label].append(_run(side, variants[label], args.identifies, args.passes))
            print(side, number, {k: round(v[-1], 2) for k, v in samples.items()}, file=sys.stderr, flush=True)
        base = statistics.median(samples["all compiled"])
        results[side] = {
            label: {
                "median_us": round(statistics.median(values), 2),
                "samples": [round(v, 2) for v in values],
                "vs_all_compiled": round(statistics.median(values) / base - 1, 4),
            }
            for label, values in samples.items()
        }
    sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
