"""The workers' own cost per identify, without the stack: ``python -m tests.bench.apply``.

Decodes and applies the bench's identifies through the worker's code (``split``,
then ``ProfileStore.apply``) against a scratch database, on one thread, with the
cycle collector handled as the worker handles it. A first pass creates the
profiles; the passes after it update them, each identify with a new event id, as
in the bench's end-to-end phase. Reported per identify: the CPU time of this
thread (decode, plan, merge and the database client: what a worker spends, less
Kafka and Redis) and, when PostgreSQL runs on this machine, its backend's CPU.

The bench's phases share two cores among a dozen processes, and their figures
move with everything else on the machine. This one runs alone, so it answers
"did this change make the worker cheaper?" in seconds. Under callgrind, with
``--callgrind``, only the measured passes are counted (start valgrind with
``--instr-atstart=no``): the instruction count repeats to a few parts in ten
thousand, which shows a change of a fraction of a percent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg

from tests.bench import procs, workload
from tests.bench.stack import create_database, drop_database
from traitstream.avro import codec
from traitstream.avro.schemas import LocalSchemas
from traitstream.config import CommonSettings
from traitstream.dialects import thrivestack
from traitstream.dialects.common import Envelope
from traitstream.runtime import collector_paused, tune_gc
from traitstream.store.database import migrate
from traitstream.store.profiles import ProfileStore
from traitstream.worker.batch import next_offsets, split

PARTITIONS = 12
WORKSPACE = "bench"
_START_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Record:
    """What ``split`` reads of a Kafka message."""

    value_bytes: bytes
    at: tuple[int, int]

    def value(self) -> bytes:
        return self.value_bytes

    def partition(self) -> int:
        return self.at[0]

    def offset(self) -> int:
        return self.at[1]

    def key(self) -> bytes | None:
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


@dataclass(frozen=True, slots=True)
class Cost:
    identifies: int
    batches: int
    worker_us: float
    """This thread's CPU time per identify."""
    postgres_us: float | None
    """The database backend's CPU time per identify (None: not on this machine)."""
    process_us: float = 0.0
    """This process's CPU time per identify (``/proc``): the thread's and any other's."""


def passes(identifies: int, count: int, population: int, seed: int) -> Iterator[list[bytes]]:
    """``count`` passes over the same ``identifies`` users' identifies, as encoded
    records: each pass with its own request ids and receive times, so that every
    pass writes every trait again."""
    size = min(500, identifies)
    bodies = workload.bodies(max(1, identifies // size), size, population, seed)
    schema_id = LocalSchemas().writer_id
    for number in range(count):
        records: list[bytes] = []
        for index, body in enumerate(bodies):
            envelope = Envelope(
                WORKSPACE, str(uuid.UUID(int=number << 32 | index)), _START_MS + number * 1000 + index
            )
            records += [codec.encode(e, schema_id) for e in thrivestack.parse(body, envelope)]
        yield records


def _backend_cpu(pid: int) -> float | None:
    """A local PostgreSQL backend's CPU seconds; None for a server elsewhere."""
    try:
        if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
            return None
    except OSError:
        return None
    return procs.cpu_seconds(pid)


def _callgrind(switch: str) -> None:
    try:
        subprocess.run(["callgrind_control", "-i", switch, str(os.getpid())], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError("--callgrind needs this process to run under valgrind --tool=callgrind") from exc


def measure(
    database_url: str,
    identifies: int = 20_000,
    measured_passes: int = 2,
    batch: int = 2000,
    population: int = 100_000,
    callgrind: bool = False,
    changes: bool = False,
) -> Cost:
    """Apply a pass to create the profiles, then ``measured_passes`` more, timed.
    ``changes``: record the profile changes in the outbox too (the relay's own cost,
    on its thread, is not counted here: ``tests.bench.changes_cost`` counts both)."""
    schemas = LocalSchemas()
    all_passes = list(passes(identifies, 1 + measured_passes, population, seed=9))
    store = ProfileStore(database_url, "bench-apply", changes=changes)
    offset = 0

    def apply(records: list[bytes]) -> int:
        nonlocal offset
        batches = 0
        for start in range(0, len(records), batch):
            with collector_paused():  # as the worker does around each batch
                messages = []
                for value in records[start : start + batch]:
                    messages.append(Record(value, (offset % PARTITIONS, offset)))
                    offset += 1
                work = split(messages, schemas)
                store.apply(work.records, next_offsets(messages))
                del messages, work
            batches += 1
        return batches

    try:
        apply(all_passes[0])
        tune_gc()
        backend = store.backend_pid()
        pg_before = _backend_cpu(backend)
        if callgrind:
            _callgrind("on")
        process_before = procs.cpu_seconds(os.getpid())
        cpu_before = time.thread_time()
        batches = sum(apply(records) for records in all_passes[1:])
        cpu = time.thread_time() - cpu_before
        process = procs.cpu_seconds(os.getpid()) - process_before
        if callgrind:
            _callgrind("off")
        pg_after = _backend_cpu(backend)
    finally:
        store.close()
    count = sum(len(records) for records in all_passes[1:])
    pg = None if pg_before is None or pg_after is None else (pg_after - pg_before) / count * 1e6
    return Cost(
        count,
        batches,
        round(cpu / count * 1e6, 2),
        None if pg is None else round(pg, 2),
        round(process / count * 1e6, 2),
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.apply",
        description="The workers' CPU per identify (and PostgreSQL's, when local), "
        "applying the bench's identifies to a scratch database.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="a server to create the scratch database on (default: TRAITSTREAM_DATABASE_URL's)",
    )
    parser.add_argument(
        "--identifies", type=int, default=20_000, help="identifies per pass (a multiple of 500 above 500)"
    )
    parser.add_argument("--passes", type=int, default=2, help="measured passes after the first")
    parser.add_argument("--batch", type=int, default=2000, help="records per transaction")
    parser.add_argument(
        "--changes",
        action="store_true",
        help="record profile changes in the outbox, as TRAITSTREAM_CHANGES=on",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions only around the measured passes (valgrind --instr-atstart=no)",
    )
    args = parser.parse_args(argv)
    if args.identifies < 1 or args.passes < 1 or args.batch < 1:
        parser.error("--identifies, --passes and --batch must be at least 1")
    from_env: dict[str, Any] = {}  # every value comes from TRAITSTREAM_* variables
    server = args.database_url or CommonSettings(**from_env).database_url
    name = f"traitstream_apply_{uuid.uuid4().hex[:8]}"
    try:
        url = create_database(server, name)
        migrate(url)
        cost = measure(
            url, args.identifies, args.passes, args.batch, callgrind=args.callgrind, changes=args.changes
        )
    except psycopg.Error as exc:
        print(f"error: PostgreSQL: {exc}", file=sys.stderr)
        return 1
    finally:
        drop_database(server, name)
    sys.stdout.write(orjson.dumps(asdict(cost)).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
