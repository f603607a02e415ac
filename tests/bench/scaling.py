"""Which consumer group protocol to ship: workers scaled 1 → 3 → 6 → 1 under steady load.

``python -m tests.bench.scaling [--rounds N] [--rate 2000] [--hold-seconds 20]``

For each protocol (``eager``, ``cooperative-sticky``, ``consumer``), on one local
Apache Kafka node: a fresh topic of 12 partitions, consumer group, scratch database
and workspace; the edge; one worker. Once it owns every partition, identifies go to
the edge over HTTP at a fixed rate (``tests.bench.identify_load``: one new user
each, with a dedupe key and an ``$add`` counter) while the workers are scaled
1 → 3 → 6 → 1, each step held ``--hold-seconds`` (new worker processes join the
group; leaving ones get SIGTERM). After the load the workers drain, and the profiles
store is read back:

* end-to-end latency per identify: ``updated_at`` (the worker's clock when it
  planned the batch that applied it) minus ``created_at`` (the event time, which
  is the edge's receipt since no ``time`` is sent); overall, and for identifies
  received in each step's first ``--window-seconds``;
* the longest gap in applying: the longest time with no batch applied while
  identifies kept arriving;
* exactness: every acknowledged identify has its profile with ``applied`` = 1
  (none lost, none applied twice).

The workers' logs give when partitions moved and who owned what at each step's end.
With ``--rounds`` above 1 the protocols' order rotates from round to round. Results
go to ``bench-results/scaling-<time>.json`` (logs beside it) and a table is printed.
Every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg

from tests.bench import child_env, procs, stats
from tests.bench.identify_load import SenderConfig
from tests.bench.stack import Stack, StackOptions
from traitstream.localkafka import LocalKafka
from traitstream.processes import Child, command, free_port

PROTOCOLS = ("eager", "cooperative-sticky", "consumer")
STEPS = (1, 3, 6, 1)
"""Workers during each step: the first is the baseline, the others are scaling steps."""
ASSIGN_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
SENDER_SLACK_S = 60.0


@dataclass(frozen=True, slots=True)
class Options:
    rate: float
    per_request: int
    hold_s: float
    window_s: float
    partitions: int
    rounds: int
    protocols: tuple[str, ...]
    database_url: str
    redis_url: str
    kafka_bootstrap: str | None
    out_dir: Path
    drain_timeout_s: float
    max_load: float | None
    """Before each protocol, wait for the 1-minute load average to fall below this."""
    max_load_wait_s: float
    worker_log_level: str
    """The workers' log level: debug shows, among others, a lag probe that timed out."""

    @property
    def requests(self) -> int:
        """Requests of the whole load: every step held ``hold_s``."""
        return int(len(STEPS) * self.hold_s * self.rate / self.per_request)


# --- the workers' logs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A line of a worker's log that the measurement uses."""

    at: float
    """Epoch seconds."""
    worker: str
    kind: str
    """assigned, revoked, batch, warning or error."""
    partitions: tuple[int, ...] = ()
    duplicates: int = 0
    text: str = ""


_KINDS = {"partitions assigned": "assigned", "partitions revoked": "revoked", "batch applied": "batch"}


def log_event(line: dict[str, Any], worker: str) -> LogEvent | None:
    """The event a JSON log line stands for, or None for lines of no interest."""
    if not isinstance(line.get("ts"), str):
        return None
    at = datetime.fromisoformat(line["ts"]).timestamp()
    message = str(line.get("msg", ""))
    kind = _KINDS.get(message)
    if kind is not None:
        partitions = tuple(int(p) for p in line.get("partitions") or ())
        return LogEvent(at, worker, kind, partitions, int(line.get("duplicates") or 0))
    level = str(line.get("level", ""))
    if level in ("warning", "error", "critical"):
        return LogEvent(at, worker, "warning" if level == "warning" else "error", text=message[:300])
    return None


def read_worker_log(path: Path, worker: str) -> tuple[list[LogEvent], list[str]]:
    """A worker's events, and the lines that are not JSON (librdkafka writes its own
    warnings to stderr as ``%<level>|<time>|<tag>|…``)."""
    events: list[LogEvent] = []
    other: list[str] = []
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return events, other
    for raw in text.splitlines():
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if raw.strip():
                other.append(raw.strip()[:300])
            continue
        if isinstance(line, dict) and (event := log_event(line, worker)) is not None:
            events.append(event)
    return events, other


def owners_at(events: Iterable[LogEvent], at: float) -> dict[str, set[int]]:
    """Who owned which partitions at ``at``, replaying assignments and revocations."""
    owned: dict[str, set[int]] = {}
    for event in sorted(events, key=lambda e: e.at):
        if event.at > at:
            break
        if event.kind == "assigned":
            owned.setdefault(event.worker, set()).update(event.partitions)
        elif event.kind == "revoked":
            owned.setdefault(event.worker, set()).difference_update(event.partitions)
    return owned


# --- the worker processes ------------------------------------------------------------------


@dataclass
class Fleet:
    """The workers of one consumer group, started and stopped one step at a time."""

    stack: Stack
    protocol: str
    group: str
    log_dir: Path
    label: str
    log_level: str = "info"
    live: list[Child] = field(default_factory=list)
    leaving: dict[str, tuple[Child, float]] = field(default_factory=dict)
    """Workers sent SIGTERM, with when."""
    exits: dict[str, dict[str, Any]] = field(default_factory=dict)
    everyone: list[Child] = field(default_factory=list)

    def add(self, count: int) -> None:
        """Start ``count`` workers in the group (without waiting for them)."""
        for _ in range(count):
            name = f"worker-{len(self.everyone) + 1}"
            port = free_port()
            child = Child(
                name,
                command("worker"),
                self.stack.env(
                    TRAITSTREAM_GROUP_ID=self.group,
                    TRAITSTREAM_GROUP_PROTOCOL=self.protocol,
                    TRAITSTREAM_METRICS_PORT=str(port),
                    TRAITSTREAM_LOG_LEVEL=self.log_level,
                ),
                self.log_dir / f"{self.label}-{name}.log",
                metrics_port=port,
            )
            child.start()
            self.live.append(child)
            self.everyone.append(child)

    def terminate(self, count: int) -> None:
        """SIGTERM to the ``count`` newest workers; ``note_exits`` sees them go."""
        for child in self.live[-count:]:
            if child.process is not None:
                child.process.send_signal(signal.SIGTERM)
            self.leaving[child.name] = (child, time.time())
        self.live = self.live[:-count]

    def note_exits(self) -> None:
        """Record the workers that have exited since SIGTERM, with how long they took."""
        for name, (child, since) in list(self.leaving.items()):
            if child.process is not None and child.process.poll() is not None:
                self.exits[name] = {
                    "status": child.process.returncode,
                    "seconds": round(time.time() - since, 2),
                }
                child.stop(0.1)  # closes its log
                del self.leaving[name]

    def reap(self, timeout_s: float) -> None:
        """Wait for the leaving workers (at most ``timeout_s``), killing any left after it."""
        deadline = time.time() + timeout_s
        while self.leaving and time.time() < deadline:
            self.note_exits()
            time.sleep(0.1)
        for name, (child, since) in list(self.leaving.items()):
            status = child.stop(0.1)
            self.exits[name] = {"status": status, "seconds": round(time.time() - since, 2), "killed": True}
            del self.leaving[name]

    def stop_all(self) -> None:
        """Stop every worker still running (the end of a run, or a failure)."""
        for child in self.live:
            status = child.stop(EXIT_TIMEOUT_S)
            self.exits.setdefault(child.name, {"status": status, "at_end": True})
        self.live = []
        self.reap(EXIT_TIMEOUT_S)

    def dead(self) -> list[str]:
        """Workers meant to be running that have exited."""
        return [c.name for c in self.live if not c.alive()]

    def events(self) -> tuple[list[LogEvent], dict[str, list[str]]]:
        """Every worker's events, and each worker's non-JSON lines."""
        events: list[LogEvent] = []
        other: dict[str, list[str]] = {}
        for child in self.everyone:
            found, lines = read_worker_log(child.log_path, child.name)
            events.extend(found)
            if lines:
                other[child.name] = lines
        return events, other


def wait_assigned(fleet: Fleet, partitions: int, timeout_s: float) -> float | None:
    """Seconds until the live workers own every partition between them; None if they
    did not within ``timeout_s``."""
    started = time.time()
    names = {c.name for c in fleet.live}
    while time.time() - started < timeout_s:
        events, _ = fleet.events()
        owned = owners_at([e for e in events if e.worker in names], time.time())
        if set().union(*owned.values(), set()) == set(range(partitions)):
            return time.time() - started
        if fleet.dead():
            return None
        time.sleep(0.2)
    return None


# --- load and schedule ---------------------------------------------------------------------


def start_sender(
    stack: Stack, options: Options, prefix: str, start_at: float, log: Path
) -> subprocess.Popen[bytes]:
    """The load generator's process; its result is one JSON line on stdout."""
    config = SenderConfig(
        url=stack.url,
        api_key=stack.api_key,
        prefix=prefix,
        rate=options.rate,
        per_request=options.per_request,
        requests=options.requests,
        start_at=start_at,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bench.identify_load", orjson.dumps(asdict(config)).decode()],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        env=child_env(),
    )


def sender_result(process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The load generator's result (it is killed if it has not finished by ``timeout_s``)."""
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("the load generator did not finish in time") from None
    if process.returncode != 0:
        raise RuntimeError(f"the load generator exited with status {process.returncode}")
    result: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return result


def sleep_until(at: float, fleet: Fleet) -> None:
    """Wait until epoch ``at``, noting leaving workers' exits meanwhile."""
    while (left := at - time.time()) > 0:
        fleet.note_exits()
        time.sleep(min(0.1, left))


def run_steps(fleet: Fleet, start_at: float, hold_s: float) -> list[float]:
    """Scale the fleet through ``STEPS``, step ``k`` at ``start_at + k * hold_s``;
    returns each step's start (epoch seconds) and returns when the last step ends."""
    starts = [start_at]
    for index in range(1, len(STEPS)):
        at = start_at + index * hold_s
        sleep_until(at, fleet)
        starts.append(time.time())
        change = STEPS[index] - STEPS[index - 1]
        if change > 0:
            fleet.add(change)
        else:
            fleet.terminate(-change)
    sleep_until(start_at + len(STEPS) * hold_s, fleet)
    return starts


def wait_drained(stack: Stack, acked: int, failed_requests: int, timeout_s: float) -> float | None:
    """Seconds until the workers have taken every acknowledged record (the offsets
    PostgreSQL holds); None if not within ``timeout_s``."""
    watch = stats.AppliedWatch(settle_s=3.0)
    watch.expect(acked, failed_requests)
    started = time.time()
    while time.time() - started < timeout_s:
        if watch.done_at(stack.applied_records(), time.time()) is not None:
            return time.time() - started
        time.sleep(0.25)
    return None


# --- what the store holds ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """One identify's profile."""

    number: int
    applied: int
    """The ``$add`` counter: how many times it was applied."""
    received_ms: int
    applied_ms: int


def read_applied(database_url: str, workspace: str) -> list[Applied]:
    """Every profile of the run's workspace."""
    query = """
        SELECT user_id, (traits->>'applied')::numeric::bigint,
               (extract(epoch FROM created_at) * 1000)::bigint,
               (extract(epoch FROM updated_at) * 1000)::bigint
        FROM profiles WHERE workspace_id = %s
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(query, (workspace,)).fetchall()
    return [
        Applied(int(user.rsplit("-", 1)[1]), int(count or 0), int(r), int(a)) for user, count, r, a in rows
    ]


def exactness(rows: Sequence[Applied], sender: dict[str, Any], per_request: int) -> dict[str, int]:
    """Acknowledged identifies against the profiles: lost (acknowledged, no profile),
    duplicated (applied more than once), and the unacknowledged that were applied."""
    unacked_requests = set(sender["unacknowledged"])
    sent = sender["identifies_sent"]
    by_number = {r.number: r for r in rows}
    lost = sum(1 for n in range(sent) if n // per_request not in unacked_requests and n not in by_number)
    return {
        "acknowledged": int(sender["identifies_acked"]),
        "profiles": len(rows),
        "applied_total": sum(r.applied for r in rows),
        "lost": lost,
        "duplicated": sum(1 for r in rows if r.applied > 1),
        "extra_applies": sum(r.applied - 1 for r in rows if r.applied > 1),
        "unacknowledged_applied": sum(1 for r in rows if r.number // per_request in unacked_requests),
        "unexpected": sum(1 for r in rows if not 0 <= r.number < sent),
    }


# --- latency and gaps ----------------------------------------------------------------------


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of latencies in milliseconds."""
    return {
        "count": len(values_ms),
        "p50": stats.percentile(values_ms, 0.50),
        "p99": stats.percentile(values_ms, 0.99),
        "max": max(values_ms) if values_ms else None,
    }


def longest_gap(apply_ms: Sequence[int], start_ms: float, end_ms: float) -> dict[str, float]:
    """The longest time between ``start_ms`` and ``end_ms`` with no batch applied
    (``apply_ms``: sorted times at which batches were applied), and where it began."""
    inside = [t for t in apply_ms if start_ms <= t <= end_ms]
    marks = [start_ms, *inside, end_ms]
    longest, began = 0.0, start_ms
    for before, after in itertools.pairwise(marks):
        if after - before > longest:
            longest, began = after - before, before
    return {"seconds": round(longest / 1000, 3), "from_s": round((began - start_ms) / 1000, 3)}


def applied_per_second(rows: Sequence[Applied], start_s: float, seconds: int) -> list[int]:
    """Identifies applied in each second from ``start_s`` (drain included)."""
    counts = [0] * seconds
    for row in rows:
        index = int(row.applied_ms / 1000 - start_s)
        if 0 <= index < seconds:
            counts[index] += 1
    return counts


# --- steps -------------------------------------------------------------------------------------


def step_label(index: int) -> str:
    return f"start {STEPS[0]}" if index == 0 else f"{STEPS[index - 1]}→{STEPS[index]}"


def ownership(events: Sequence[LogEvent], at: float, live: set[str], partitions: int) -> dict[str, Any]:
    """Who owned how many partitions at ``at``: complete when every partition has
    exactly one owner among the workers that should be running."""
    owned = {w: p for w, p in owners_at(events, at).items() if p}
    counted: dict[int, int] = {}
    for parts in owned.values():
        for p in parts:
            counted[p] = counted.get(p, 0) + 1
    return {
        "counts": sorted((len(p) for w, p in owned.items() if w in live), reverse=True),
        "owned_by_departed": sorted({p for w, ps in owned.items() if w not in live for p in ps}),
        "unowned": sorted(set(range(partitions)) - set(counted)),
        "doubly_owned": sorted(p for p, n in counted.items() if n > 1),
    }


def step_report(
    index: int,
    started: float,
    rows: Sequence[Applied],
    apply_ms: Sequence[int],
    events: Sequence[LogEvent],
    live: set[str],
    options: Options,
) -> dict[str, Any]:
    """One step: latency and the longest gap of its first ``window_s``, when its
    partition moves settled, what the workers re-read, and who owned what at its end."""
    window_end = started + options.window_s
    step_end = started + options.hold_s
    latencies = [
        r.applied_ms - r.received_ms for r in rows if started * 1000 <= r.received_ms < window_end * 1000
    ]
    moves = [e.at for e in events if e.kind in ("assigned", "revoked") and started <= e.at < step_end]
    batches = [e for e in events if e.kind == "batch" and started <= e.at < step_end]
    return {
        "step": step_label(index),
        "workers": STEPS[index],
        "window_latency_ms": latency_summary(latencies),
        "window_longest_gap": longest_gap(apply_ms, started * 1000, window_end * 1000),
        "partition_moves": len(moves),
        "moves_settled_s": round(max(moves) - started, 2) if moves else None,
        "reread_records": sum(e.duplicates for e in batches),
        "owners_at_end": ownership(events, step_end - 0.05, live, options.partitions),
    }


def live_at_steps(fleet_names: Sequence[str]) -> list[set[str]]:
    """The workers meant to run in each step (the newest leave first)."""
    return [set(fleet_names[:count]) for count in STEPS]


# --- one protocol ------------------------------------------------------------------------------


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far: by the whole machine (busy and in all), by this
    process and everything it started (the broker, the edge, the workers, the load
    generator; exited ones too, once reaped), and by PostgreSQL and Redis, which
    other runs on the machine share."""
    busy, total = procs.machine_busy_seconds()
    times = os.times()
    ours = sum(procs.cpu_seconds(p) for p in procs.tree(os.getpid()))
    ours += times.children_user + times.children_system
    services = sum(procs.cpu_seconds(p) for p in procs.pids_named("postgres", "redis-server"))
    return {"busy": busy, "total": total, "ours": ours, "services": services}


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Between two ``cpu_seconds``: the machine's busy fraction, and how much of the
    machine's time went to our processes, to PostgreSQL and Redis, and to the rest
    (other runs sharing the machine)."""
    delta = {k: after[k] - before[k] for k in after}
    total = delta["total"]
    if total <= 0:
        return {"busy": None, "ours": None, "services": None, "others": None}
    others = delta["busy"] - delta["ours"] - delta["services"]
    return {
        "busy": round(delta["busy"] / total, 3),
        "ours": round(delta["ours"] / total, 3),
        "services": round(delta["services"] / total, 3),
        "others": round(max(0.0, others) / total, 3),
    }


def wait_for_quiet(max_load: float | None, timeout_s: float) -> float:
    """Wait until the 1-minute load average is below ``max_load`` (at most
    ``timeout_s``); returns the seconds waited."""
    started = time.time()
    while max_load is not None and os.getloadavg()[0] >= max_load and time.time() - started < timeout_s:
        time.sleep(5)
    return round(time.time() - started, 1)


def clock(at: float) -> str:
    """Epoch seconds as UTC time of day, to the millisecond (as the logs write it)."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_protocol(
    protocol: str, round_index: int, bootstrap: str, options: Options, log_dir: Path
) -> dict[str, Any]:
    """The whole measurement for one protocol, on a stack of its own (always closed)."""
    label = f"r{round_index + 1}-{protocol}"
    waited = wait_for_quiet(options.max_load, options.max_load_wait_s)
    result: dict[str, Any] = {
        "protocol": protocol,
        "round": round_index + 1,
        "waited_for_quiet_s": waited,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
    }
    stack = Stack(
        StackOptions(
            database_url=options.database_url,
            redis_url=options.redis_url,
            kafka_bootstrap=bootstrap,
            workers=0,
            edge_processes=2,
            partitions=options.partitions,
            log_dir=log_dir,
        )
    )
    group = f"scaling-{protocol}-{uuid.uuid4().hex[:8]}"
    fleet = Fleet(stack, protocol, group, log_dir, label, options.worker_log_level)
    try:
        stack.prepare()
        stack.start_edge()
        result |= {"topic": stack.topic, "group": fleet.group}
        fleet.add(1)
        first = wait_assigned(fleet, options.partitions, ASSIGN_TIMEOUT_S)
        if first is None:
            raise RuntimeError(f"the first worker did not own all partitions within {ASSIGN_TIMEOUT_S:.0f}s")
        result["first_assignment_s"] = round(first, 2)
        measure(stack, fleet, options, log_dir / f"{label}-load.log", result)
    except Exception as exc:  # one protocol's failure must not hide the others' results
        result["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        fleet.stop_all()
        events, other = fleet.events()
        result["worker_exits"] = fleet.exits
        result["worker_warnings"] = [
            f"{clock(e.at)} {e.worker} {e.kind}: {e.text}" for e in events if e.kind in ("warning", "error")
        ][:40]
        result["librdkafka_lines"] = {w: lines[:20] for w, lines in other.items()}
        with contextlib.suppress(Exception):
            stack.delete_topics([stack.topic, f"{stack.topic}.dlq"])
        stack.close()
    return result


def measure(stack: Stack, fleet: Fleet, options: Options, sender_log: Path, result: dict[str, Any]) -> None:
    """Load, scaling steps, drain, and what the store holds, into ``result``."""
    prefix = f"s{uuid.uuid4().hex[:6]}"
    start_at = time.time() + 2.0
    cpu_before = cpu_seconds()
    sender = start_sender(stack, options, prefix, start_at, sender_log)
    starts = run_steps(fleet, start_at, options.hold_s)
    load = sender_result(sender, SENDER_SLACK_S)
    result["cpu_share"] = cpu_shares(cpu_before, cpu_seconds())
    result["load_average_at_end"] = load_average()
    result["sender"] = {k: v for k, v in load.items() if k != "unacknowledged"} | {
        "unacknowledged_requests": len(load["unacknowledged"])
    }
    result["dead_workers"] = fleet.dead()
    drained = wait_drained(
        stack, load["identifies_acked"], len(load["unacknowledged"]), options.drain_timeout_s
    )
    result["drain_s"] = None if drained is None else round(drained, 2)
    fleet.reap(EXIT_TIMEOUT_S)
    rows = read_applied(stack.database_url, stack.workspace)
    result["exactness"] = exactness(rows, load, options.per_request)
    load_end = start_at + len(STEPS) * options.hold_s
    result["latency_ms"] = latency_summary([r.applied_ms - r.received_ms for r in rows])
    apply_ms = sorted({r.applied_ms for r in rows})
    result["longest_gap"] = longest_gap(apply_ms, start_at * 1000, load_end * 1000)
    events, _ = fleet.events()
    live = live_at_steps([c.name for c in fleet.everyone])
    result["steps"] = [
        step_report(i, started, rows, apply_ms, events, live[i], options)
        | {"at_s": round(started - start_at, 2)}
        for i, started in enumerate(starts)
    ]
    seconds = int(len(STEPS) * options.hold_s + (drained or 0) + 5)
    result["applied_per_second"] = applied_per_second(rows, start_at, seconds)


# --- the sitting -------------------------------------------------------------------------------


def protocol_order(protocols: Sequence[str], round_index: int) -> list[str]:
    """``protocols`` rotated by the round, so that no protocol always runs first."""
    shift = round_index % len(protocols)
    return [*protocols[shift:], *protocols[:shift]]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    return {"cpus": os.cpu_count(), "model": model, "memory_gib": round(memory_kb / 2**20, 1)}


def run_sitting(options: Options, log_dir: Path) -> list[dict[str, Any]]:
    """Every round's protocols on one broker (started here unless one is given)."""
    broker = None if options.kafka_bootstrap else LocalKafka(1).start()
    bootstrap = options.kafka_bootstrap or (broker.bootstrap if broker else "")
    results = []
    try:
        for round_index in range(options.rounds):
            for protocol in protocol_order(options.protocols, round_index):
                print(f"{protocol} (round {round_index + 1}) ...", file=sys.stderr, flush=True)
                results.append(run_protocol(protocol, round_index, bootstrap, options, log_dir))
    finally:
        if broker is not None:
            with contextlib.suppress(OSError):
                shutil.copy(broker.nodes[0].log_path, log_dir / "broker.log")
            broker.stop()
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(results: Sequence[dict[str, Any]]) -> str:
    """Two compact tables: each run overall, then each scaling step's first seconds."""
    lines = [
        "protocol            rnd load1 others  acked  lost dup  p50ms  p99ms  max_ms  gap_s",
    ]
    for r in results:
        if "exactness" not in r:
            lines.append(f"{r['protocol']:<19} {r['round']:>3} FAILED: {r.get('failure')}")
            continue
        x, lat = r["exactness"], r["latency_ms"]
        lines.append(
            f"{r['protocol']:<19} {r['round']:>3} {r['load_average_at_start'][0]:>5.2f} "
            f"{_share(r['cpu_share']['others']):>6} "
            f"{x['acknowledged']:>6} {x['lost']:>5} {x['duplicated']:>3} {_ms(lat['p50']):>6} "
            f"{_ms(lat['p99']):>6} {_ms(lat['max']):>7} {r['longest_gap']['seconds']:>6.2f}"
        )
    lines += ["", "protocol            rnd step     p50ms  p99ms  max_ms  gap_s settled_s reread owners"]
    for r in results:
        for s in r.get("steps", []):
            w, owners = s["window_latency_ms"], s["owners_at_end"]
            settled = "-" if s["moves_settled_s"] is None else f"{s['moves_settled_s']:.1f}"
            flag = "" if not (owners["unowned"] or owners["doubly_owned"]) else " !"
            lines.append(
                f"{r['protocol']:<19} {r['round']:>3} {s['step']:<7} {_ms(w['p50']):>6} {_ms(w['p99']):>6} "
                f"{_ms(w['max']):>7} {s['window_longest_gap']['seconds']:>6.2f} {settled:>9} "
                f"{s['reread_records']:>6} {owners['counts']}{flag}"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="times to run every protocol (order rotates)")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated, of " + ", ".join(PROTOCOLS)
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="identifies per second")
    parser.add_argument("--per-request", type=int, default=20, help="identifies per HTTP request")
    parser.add_argument("--hold-seconds", type=float, default=20.0, help="length of each step")
    parser.add_argument("--window-seconds", type=float, default=15.0, help="a step's first seconds, measured")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--drain-seconds", type=float, default=120.0, help="longest wait for the backlog")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TRAITSTREAM_DATABASE_URL", "postgresql://127.0.0.1:5432/postgres"),
        help="a PostgreSQL server (a scratch database is made on it for each protocol)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TRAITSTREAM_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--kafka-bootstrap", default=None, help="an existing broker (default: start one)")
    parser.add_argument("--max-load", type=float, default=None, help="wait for a load average below this")
    parser.add_argument("--max-load-wait-seconds", type=float, default=300.0)
    parser.add_argument("--worker-log-level", default="info", choices=["debug", "info"])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--note", default="", help="a note kept in the results (what else ran)")
    args = parser.parse_args(argv)
    protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
    if not protocols or set(protocols) - set(PROTOCOLS):
        parser.error(f"--protocols takes some of {', '.join(PROTOCOLS)}")
    options = Options(
        rate=args.rate,
        per_request=args.per_request,
        hold_s=args.hold_seconds,
        window_s=min(args.window_seconds, args.hold_seconds),
        partitions=args.partitions,
        rounds=max(1, args.rounds),
        protocols=protocols,
        database_url=args.database_url,
        redis_url=args.redis_url,
        kafka_bootstrap=args.kafka_bootstrap,
        out_dir=args.out,
        drain_timeout_s=args.drain_seconds,
        max_load=args.max_load,
        max_load_wait_s=args.max_load_wait_seconds,
        worker_log_level=args.worker_log_level,
    )
    return options, args.note


def main(argv: Sequence[str]) -> int:
    options, note = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = options.out_dir / f"scaling-{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = run_sitting(options, log_dir)
    document = {
        "started_at": stamp,
        "machine": machine(),
        "note": note,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
        | {"steps": list(STEPS), "requests": options.requests},
        "runs": results,
    }
    path = options.out_dir / f"scaling-{stamp}.json"
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(table(results))
    print(f"\nresults: {path}\nlogs: {log_dir}")
    return 0 if all("failure" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
