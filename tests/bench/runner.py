"""The bench's phases, in order, on one stack:

1. raw limits (PostgreSQL bulk upsert, broker produce and consume, Redis), with
   nothing of ours running;
2. end to end: batched load (4 clients, 500 identifies a request) with the
   workers applying meanwhile, from its first request until the last identify is
   applied in PostgreSQL; with the profile change stream on (the default), then
   the same again with it off, side by side;
3. batched ingestion: the same load with the workers stopped, which measures
   what the edge tier acknowledges when it has the machine (with the broker);
4. single-identify requests (16 clients), with the workers stopped (the edge
   tier's capacity), then with them applying on the same cores;
5. worker drain: the workers stopped, a backlog produced, the workers started
   again with the edge idle;
6. steady load at half the end-to-end rate in requests of 100: end-to-end
   latency from the workers' histogram; then the same rate in the end-to-end
   phase's requests of 500 (half its load), reported beside it;
7. the soak: steady load for longer, sampling the workers' memory;
8. optionally, py-spy profiles of the edge and the workers under load.

Load comes from ``tests.bench.load`` in a separate process.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from tests.bench import child_env, limits, procs, report, stats
from tests.bench import profile as profiling
from tests.bench.load import LoadConfig, LoadResult
from tests.bench.stack import Stack, StackOptions

log = logging.getLogger(__name__)

HISTOGRAM = "traitstream_end_to_end_seconds"
POPULATION = 100_000
BATCH = 500
"""Identifies in each request of the batched phases (end to end, ingestion, the
drain's backlog) and of the second latency phase."""
SMALL_BATCH = 100
"""Identifies in each request of the latency phase judged against its target and
of the soak."""
WARM_UP = 20_000


def _latency(histogram: stats.Histogram) -> dict[str, Any]:
    """End-to-end p50 and p99 as Prometheus reads them, and the exact share applied
    within the target's second."""
    return {
        "observed": histogram.count,
        "p50": stats.histogram_quantile(0.5, histogram),
        "p99": stats.histogram_quantile(0.99, histogram),
        "within_1s": stats.share_within(1.0, histogram),
    }


@dataclass(frozen=True, slots=True)
class BenchOptions:
    database_url: str
    redis_url: str
    kafka_bootstrap: str | None = None
    quick: bool = False
    phase_s: float = 20.0
    soak_s: float = 120.0
    soak_rate: float | None = None
    """Identifies per second in the soak. None: half the end-to-end rate."""
    latency_s: float = 30.0
    """Length of the steady phase at half the maximum rate (end-to-end latency)."""
    fresh_topics: bool = True
    """Each phase on a new topic (see ``Stack.rotate_topic``)."""
    backlog: int = 100_000
    workers: int = 2
    edge_processes: int = 4
    """More than the cores: the processes share one listening socket, and the few
    keep-alive connections of a load (4 for batches) often landed unevenly on two,
    leaving a core idle."""
    partitions: int = 12
    batch_size: int = 2000
    pg_rows: int = 100_000
    broker_records: int = 200_000
    redis_keys: int = 200_000
    profile: bool = True
    profile_s: float = 10.0
    out_dir: Path = Path("bench-results")
    docs_chart: Path | None = None
    max_load: float | None = None
    max_load_wait_s: float = 1200.0


def quick(options: BenchOptions) -> BenchOptions:
    """Durations and sizes for a run of about a minute."""
    return replace(
        options,
        quick=True,
        phase_s=4.0,
        soak_s=min(options.soak_s, 8.0),
        latency_s=5.0,
        fresh_topics=False,
        backlog=15_000,
        pg_rows=25_000,
        broker_records=50_000,
        redis_keys=50_000,
        profile=False,
    )


_T0 = time.monotonic()


def _say(text: str) -> None:
    print(f"[{time.monotonic() - _T0:5.0f}s] {text}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, options: BenchOptions) -> None:
        self.o = options
        self.started = datetime.now(UTC)
        self.stamp = self.started.strftime("%Y-%m-%dT%H%M%S")
        self.stack = Stack(
            StackOptions(
                database_url=options.database_url,
                redis_url=options.redis_url,
                kafka_bootstrap=options.kafka_bootstrap,
                workers=options.workers,
                edge_processes=options.edge_processes,
                partitions=options.partitions,
                batch_size=options.batch_size,
                log_dir=options.out_dir / f"{self.stamp}-logs",
            )
        )
        self.limits: dict[str, limits.Limit] = {}
        self.figures: dict[str, dict[str, Any]] = {}
        self.cpu: dict[str, dict[str, float]] = {}
        self.meter = procs.CpuMeter()
        self.profiles: dict[str, Any] = {}
        self.applied = stats.AppliedWatch()
        """What the workers must finish on the current topic before a phase counts as applied."""

    # --- helpers --------------------------------------------------------------------

    def _groups(self) -> dict[str, list[int]]:
        s = self.stack
        groups = {
            "edge": procs.tree(s.edge.pid) if s.edge else [],
            "workers": [w.pid for w in s.workers],
            "postgres": procs.pids_named("postgres"),
            "redis": procs.pids_named("redis-server"),
        }
        if s.broker is not None:
            groups["broker"] = s.broker.pids
        return groups

    def _load(self, label: str, **config: Any) -> subprocess.Popen[bytes]:
        load = LoadConfig(
            url=self.stack.url, api_key=self.stack.api_key, label=label, population=POPULATION, **config
        )
        return subprocess.Popen(
            [sys.executable, "-m", "tests.bench.load", orjson.dumps(asdict(load)).decode()],
            stdout=subprocess.PIPE,
            env=child_env(),
        )

    def _result(self, process: subprocess.Popen[bytes], timeout_s: float) -> LoadResult:
        out, _ = process.communicate(timeout=timeout_s)
        if process.returncode != 0:
            raise RuntimeError(f"the load generator exited with status {process.returncode}")
        result = LoadResult(**orjson.loads(out))
        self.applied.expect(result.identifies_acked, result.errors)
        return result

    def _rotate_topic(self) -> None:
        self.stack.rotate_topic()
        self.applied.reset()

    def _run_load(self, label: str, timeout_s: float, **config: Any) -> LoadResult:
        return self._result(self._load(label, **config), timeout_s)

    def _wait_applied(self, timeout_s: float) -> float:
        """Wait until the workers have finished every record the edge acknowledged
        on the current topic (``stats.AppliedWatch``, from the offsets PostgreSQL
        committed with the profiles); returns the epoch seconds when they had."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = self.applied.done_at(self.stack.applied_records(), time.time())
            if done is not None:
                return done
            time.sleep(0.05)
        raise TimeoutError(
            f"the workers applied {self.stack.applied_records()} of {self.applied.acked} records "
            f"in {timeout_s:.0f}s"
        )

    # --- phases ---------------------------------------------------------------------

    def measure_limits(self) -> None:
        _say("raw limits of this machine …")
        o, s = self.o, self.stack
        pg = limits.postgres_upsert(s.database_url, o.pg_rows, POPULATION)
        _say(f"PostgreSQL bulk upsert   {pg.rate:>10,.0f} rows/s")
        topic = f"{s.topic}-limit"
        from traitstream import kafka_admin

        kafka_admin.ensure_topics(s.bootstrap, {topic: o.partitions})
        produce = limits.broker_produce(s.bootstrap, topic, o.broker_records)
        _say(f"broker produce           {produce.rate:>10,.0f} records/s")
        consume = limits.broker_consume(s.bootstrap, topic, o.broker_records)
        _say(f"broker consume           {consume.rate:>10,.0f} records/s")
        s.delete_topics([topic])
        claims = limits.redis_claims(o.redis_url, o.redis_keys)
        _say(f"Redis SET NX GET EX      {claims.rate:>10,.0f} keys/s")
        self.limits = {x.name: x for x in (pg, produce, consume, claims)}

    def fresh_topic(self) -> None:
        if self.o.fresh_topics:
            self._rotate_topic()
            self.warm_up()

    def warm_up(self) -> None:
        """Enough identifies for every process to have joined and run its hot paths.
        A count, not a time: the faster the edge, the more a timed warm-up would
        leave on the topic for the phase that follows."""
        self._run_load("warm-up", 120, clients=4, batch=BATCH, duration_s=0, total=WARM_UP, seed=11)
        self._wait_applied(120)

    def _batched_load(self, label: str, seed: int) -> LoadResult:
        return self._run_load(
            label, self.o.phase_s + 120, clients=4, batch=BATCH, duration_s=self.o.phase_s, seed=seed
        )

    def _acked(self, result: LoadResult) -> dict[str, Any]:
        acked = stats.rate(result.identifies_acked, result.seconds)
        return {
            "identifies_per_s": acked,
            "identifies": result.identifies_acked,
            "seconds": result.seconds,
            "requests": result.requests,
            "errors": result.errors,
            "statuses": result.statuses,
            "request_latency_ms": result.latency_ms,
            "bound_by": "broker_produce",
            "ratio": stats.ratio(acked, self.limits["broker_produce"].rate),
        }

    def end_to_end(self) -> None:
        _say(f"end to end: 4 clients, {BATCH} identifies a request, the workers applying meanwhile")
        self._end_to_end("end_to_end")

    def end_to_end_changes_off(self) -> None:
        """End to end again with the workers publishing no profile changes: what the
        change stream costs, beside the phase that ran with it."""
        _say("end to end, the profile change stream off")
        self.stack.stop_workers()
        self.stack.start_workers(TRAITSTREAM_CHANGES="off")
        self.warm_up()
        self._end_to_end("end_to_end_changes_off")
        self.stack.stop_workers()
        self.stack.start_workers()  # the stream on again, for the phases that follow

    def _end_to_end(self, name: str) -> None:
        self.meter.start(self._groups())
        result = self._batched_load(name.replace("_", "-"), seed=21)
        done_at = self._wait_applied(max(120.0, self.o.phase_s * 20))
        self.cpu[name] = self.meter.stop(self._groups()) | {"load": round(result.cpu_s, 2)}
        e2e_s = done_at - result.started_at
        e2e = stats.rate(result.identifies_acked, e2e_s)
        self.figures[name] = {
            "identifies_per_s": e2e,
            "identifies": result.identifies_acked,
            "seconds": e2e_s,
            "bound_by": "postgres_upsert",
            "ratio": stats.ratio(e2e, self.limits["postgres_upsert"].rate),
            # What the edge acknowledged while sharing the machine with the workers.
            "acknowledged": self._acked(result),
        }

    def ingestion(self) -> None:
        """The edge tier's capacity: the workers are stopped, as they would run on
        machines of their own, so the edge and the broker have the two cores. The
        records are left unapplied: the phase ends on a fresh topic."""
        _say(f"batched ingestion: 4 clients, {BATCH} identifies a request, the workers stopped")
        self.stack.stop_workers()
        self.meter.start(self._groups())
        result = self._batched_load("batched", seed=22)
        self.cpu["ingestion"] = self.meter.stop(self._groups()) | {"load": round(result.cpu_s, 2)}
        self.figures["batched_ingestion"] = self._acked(result)
        self._rotate_topic()  # starts the workers again
        self.warm_up()  # and waits until they apply, so the next phase has them

    def single(self) -> None:
        """Single-identify requests, measured twice. First the edge tier's capacity,
        with the workers stopped as for batched ingestion (in production they run on
        machines of their own); then again on a fresh topic with the workers applying
        on the same two cores, as end to end."""
        _say("single-identify requests: 16 clients, the workers stopped")
        self.stack.stop_workers()
        self.figures["single_identify_edge"] = self._single_load("single_edge", seed=32)
        self._rotate_topic()  # starts the workers again
        self.warm_up()
        _say("single-identify requests: 16 clients, the workers applying meanwhile")
        self.figures["single_identify"] = self._single_load("single", seed=31)
        self._wait_applied(max(120.0, self.o.phase_s * 20))

    def _single_load(self, label: str, seed: int) -> dict[str, Any]:
        self.meter.start(self._groups())
        result = self._run_load(
            label,
            self.o.phase_s + 120,
            clients=16,
            batch=1,
            duration_s=self.o.phase_s,
            bodies=4096,
            seed=seed,
        )
        self.cpu[label] = self.meter.stop(self._groups()) | {"load": round(result.cpu_s, 2)}
        rps = stats.rate(result.requests, result.seconds)
        return {
            "requests_per_s": rps,
            "requests": result.requests,
            "errors": result.errors,
            "statuses": result.statuses,
            "seconds": result.seconds,
            "latency_ms": result.latency_ms,
            "bound_by": "broker_produce",
            "ratio": stats.ratio(rps, self.limits["broker_produce"].rate),
        }

    def drain(self) -> None:
        _say(f"worker drain: {self.o.backlog:,} identifies queued with the workers stopped")
        s = self.stack
        s.stop_workers()
        base = s.applied_records()
        self._run_load("backlog", 600, clients=4, batch=BATCH, duration_s=0, total=self.o.backlog, seed=41)
        target = self.applied.acked
        backlog = target - base
        started = time.time()
        s.start_workers()
        self.meter.start(self._groups())
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + max(300.0, backlog / 500)
        applied = base
        while time.monotonic() < deadline:
            applied = s.applied_records()
            now = time.time()
            if first is None and applied > base:
                first = (now, applied)
            done = self.applied.done_at(applied, now)
            if done is not None:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"the workers drained {applied - base} of {backlog} records")
        self.cpu["drain"] = self.meter.stop(self._groups())
        if first is None:  # everything was applied before the first look
            first = (started, base)
        rate = stats.rate(target - first[1], done - first[0])
        bound = min(("postgres_upsert", "broker_consume", "redis_dedupe"), key=lambda n: self.limits[n].rate)
        self.figures["drain"] = {
            "identifies_per_s": rate,
            "backlog": backlog,
            "seconds_from_first_batch": done - first[0],
            "seconds_from_worker_start": done - started,
            "identifies_per_s_with_startup": stats.rate(backlog, done - started),
            "bound_by": bound,
            "ratio": stats.ratio(rate, self.limits[bound].rate),
        }

    def _half_rate(self) -> float:
        e2e = self.figures["end_to_end"]["identifies_per_s"] or 1000.0
        return max(100.0, e2e / 2)

    def soak_rate(self) -> float:
        """The soak's rate: as asked, else half the end-to-end rate."""
        return self.o.soak_rate if self.o.soak_rate is not None else self._half_rate()

    def _paced(
        self, name: str, seconds: float, rate: float, batch: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Paced load at ``rate`` identifies per second, ``batch`` to a request, for
        ``seconds``: the end-to-end latency figures, over the whole phase and in the
        windows between samples, and RSS samples (every 5 s) of the workers and the
        edge."""
        s = self.stack
        windows = stats.Windows(self._e2e_histogram(), time.monotonic())
        rss: list[dict[str, Any]] = []

        def sample(last: bool = False) -> None:
            windows.scrape(time.monotonic(), self._e2e_histogram(), closing=last)
            rss.append(
                {
                    "t": round(time.time(), 1),
                    "workers_mb": [round((procs.rss_bytes(w.pid) or 0) / 2**20, 1) for w in s.workers],
                    "edge_mb": round(sum(procs.rss_bytes(p) or 0 for p in procs.tree(s.edge.pid)) / 2**20, 1)
                    if s.edge
                    else None,
                }
            )

        self.meter.start(self._groups())
        process = self._load(
            name, clients=4, batch=batch, duration_s=seconds, mode="paced", rate=rate, seed=51, bodies=256
        )
        sample()
        next_sample = time.monotonic() + 5
        while process.poll() is None:
            time.sleep(0.2)
            if time.monotonic() >= next_sample:
                sample()
                next_sample += 5
        result = self._result(process, 60)
        self._wait_applied(max(120.0, seconds))
        sample(last=True)
        self.cpu[name] = self.meter.stop(self._groups()) | {"load": round(result.cpu_s, 2)}
        figure = {
            "rate_target": rate,
            "identifies_per_request": batch,
            "rate_sent": stats.rate(result.identifies_acked, result.seconds),
            "seconds": result.seconds,
            "errors": result.errors,
            "e2e_latency_s": _latency(windows.whole()),
            # The phase's 5 s windows by the time each identify was applied, the
            # last one running on while the workers finish: whether the slow ones
            # came together or spread through the phase.
            "e2e_windows": [{"seconds": round(t, 1)} | _latency(h) for t, h in windows.cut],
            "request_latency_ms": result.latency_ms,
        }
        return figure, rss

    def _e2e_histogram(self) -> stats.Histogram:
        """The end-to-end histogram, merged over the workers."""
        scrapes = self.stack.worker_metrics()
        return stats.merge_histograms(stats.parse_histogram(t, HISTOGRAM) for t in scrapes)

    def steady(self) -> None:
        """The latency at half the maximum rate, judged in requests of 100. That
        is a heavier load than half the end-to-end phase's: two and a half times
        its requests a second, each a batch per partition for the broker and the
        workers (measured at 9,900 identifies/s: the machine 69 to 73% busy,
        against 53% in requests of 500). So the same rate in the end-to-end
        phase's own requests, half its load, runs next on a fresh topic and is
        reported beside it. It is not the judged one: with 500 identifies a
        request, 1% of the identifies is a few requests' worth, and a single slow
        batch decides the p99."""
        seconds, rate = self.o.latency_s, self._half_rate()
        _say(f"end-to-end latency at half the end-to-end rate, for {seconds:.0f} s")
        self.figures["steady"], _ = self._paced("steady", seconds, rate, SMALL_BATCH)
        self.fresh_topic()
        _say(f"the same rate in requests of {BATCH}, for {seconds:.0f} s")
        self.figures["steady_end_to_end_requests"], _ = self._paced(f"steady-{BATCH}", seconds, rate, BATCH)

    def soak(self) -> None:
        seconds, rate = self.o.soak_s, self.soak_rate()
        _say(f"soak: {rate:,.0f} identifies/s for {seconds:.0f} s, watching the workers' memory")
        figure, rss = self._paced("soak", seconds, rate, SMALL_BATCH)
        start_mb, end_mb = sum(rss[0]["workers_mb"]), sum(rss[-1]["workers_mb"])
        self.figures["soak"] = figure | {
            "worker_rss_mb": {"start": rss[0]["workers_mb"], "end": rss[-1]["workers_mb"]},
            "worker_rss_growth": stats.ratio(end_mb - start_mb, start_mb),
            "samples": rss,
        }

    def profile(self) -> None:
        if profiling.available() is None:
            _say("py-spy is not installed: no profile (pip install -e '.[bench]')")
            return
        s = self.stack
        seconds = self.o.profile_s
        out = self.o.out_dir / f"{self.stamp}-profile"
        out.mkdir(parents=True, exist_ok=True)
        texts: list[str] = []
        for label, config in (
            ("batched", {"clients": 4, "batch": 500, "seed": 61}),
            ("single", {"clients": 16, "batch": 1, "bodies": 4096, "seed": 71}),
        ):
            _say(f"profiling the edge and the workers under {label} load ({seconds:.0f} s)")
            process = self._load(f"profile-{label}", duration_s=seconds + 3, **config)
            time.sleep(1.5)
            if s.edge is None:
                raise RuntimeError("the edge is not running")
            spies = {
                "edge": profiling.record(s.edge.pid, seconds, out / f"{label}-edge.txt", subprocesses=True)
            }
            if label == "batched":
                for worker in s.workers:
                    spies[worker.name] = profiling.record(
                        worker.pid, seconds, out / f"{label}-{worker.name}.txt"
                    )
            for name, spy in spies.items():
                _, err = spy.communicate(timeout=seconds + 60)
                if spy.returncode != 0:
                    _say(f"py-spy on {name} failed: {err.decode(errors='replace').strip()[-300:]}")
            self._result(process, seconds + 120)
            self._wait_applied(300)
            parts = [(f"{label}-edge", out / f"{label}-edge.txt")]
            if label == "batched":
                worker_texts = "\n".join(
                    (out / f"{label}-{w.name}.txt").read_text()
                    for w in s.workers
                    if (out / f"{label}-{w.name}.txt").exists()
                )
                (out / f"{label}-workers.txt").write_text(worker_texts)
                parts.append((f"{label}-workers", out / f"{label}-workers.txt"))
            for title, path in parts:
                if not path.exists():
                    continue
                summary = profiling.summarize(path.read_text())
                self.profiles[title] = {"samples": summary.samples, "areas": summary.areas[:12]}
                texts.append(profiling.render(f"{title} ({seconds:.0f} s at 100 Hz)", summary))
        (out / "summary.md").write_text("\n".join(texts))
        self.profiles["files"] = str(out)

    # --- the whole run ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        load_start = procs.load_average()
        try:
            _say(f"starting the stack (logs in {self.stack.options.log_dir})")
            self.stack.prepare()
            self.measure_limits()
            self.stack.start_edge()
            self.stack.start_workers()
            self.warm_up()
            self.end_to_end()
            for phase in (
                self.end_to_end_changes_off,
                self.ingestion,
                self.single,
                self.drain,
                self.steady,
                self.soak,
            ):
                self.fresh_topic()
                phase()
            if self.o.profile:
                self.fresh_topic()
                self.profile()
        finally:
            load_end = procs.load_average()
            self.stack.close()
        return {
            "started_at": self.started.isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_start": load_start,
                "load_average_end": load_end,
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "options": {k: _public(v) for k, v in asdict(self.o).items()},
            "limits": {
                name: {"what": x.what, "count": x.count, "seconds": x.seconds, "rate": x.rate}
                for name, x in self.limits.items()
            },
            "figures": self.figures,
            "cpu_seconds": self.cpu,
            "profile": self.profiles,
        }


def _public(value: Any) -> Any:
    """An option as it may be written down: paths as text, URLs without passwords."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunsplit(parts._replace(netloc=netloc))
    return value


def wait_for_quiet(max_load: float, max_wait_s: float, every_s: float = 30.0) -> float:
    """Wait (bounded) until the 1-minute load average is below ``max_load``; returns it."""
    deadline = time.monotonic() + max_wait_s
    load = procs.load_average()
    while load >= max_load and time.monotonic() < deadline:
        _say(
            f"load average {load:.2f} ≥ {max_load:.2f}: waiting {every_s:.0f} s for the machine to calm down"
        )
        time.sleep(every_s)
        load = procs.load_average()
    if load >= max_load:
        _say(f"load average still {load:.2f} after {max_wait_s:.0f} s: running anyway")
    return load


def main(options: BenchOptions) -> int:
    if options.max_load is not None:
        wait_for_quiet(options.max_load, options.max_load_wait_s)
    bench = Bench(options)
    results = bench.run()
    results["targets"] = [asdict(t) for t in report.targets(results)]
    json_path = options.out_dir / f"{bench.stamp}.json"
    report.write_json(results, json_path)
    chart_path = options.out_dir / f"{bench.stamp}.png"
    charted = report.chart(results, chart_path)
    if charted and options.docs_chart is not None:
        report.chart(results, options.docs_chart, small=True)
    print(report.summary(results))
    print(f"results: {json_path}" + (f"\nchart:   {chart_path}" if charted else ""))
    if bench.profiles.get("files"):
        print(f"profile: {bench.profiles['files']}/summary.md")
    return 0
