"""The bench's pure parts: percentiles, ratios, Prometheus histograms, the profile
summary, the workload, the load generator's target check; and the hand-written
Avro path the bench's profile led to, byte for byte against fastavro."""

from __future__ import annotations

import io
import math
import random
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastavro import schemaless_reader, schemaless_writer

from tests.bench import profile, report, stats, workload
from tests.bench.load import check_loopback
from traitstream import exposition
from traitstream.avro import binary, codec
from traitstream.avro.schemas import LOCAL_SCHEMA_ID, LocalSchemas
from traitstream.dialects import thrivestack
from traitstream.dialects.common import Envelope, check_value
from traitstream.errors import InvalidRecord, InvalidRequest, LimitExceeded
from traitstream.events import IdentifyEvent, Kind, Op, Operation

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXPOSITION = """\
# HELP traitstream_end_to_end_seconds From the edge receiving an identify to its being applied
# TYPE traitstream_end_to_end_seconds histogram
traitstream_end_to_end_seconds_bucket{le="0.1"} 10.0
traitstream_end_to_end_seconds_bucket{le="0.25"} 60.0
traitstream_end_to_end_seconds_bucket{le="0.5"} 90.0
traitstream_end_to_end_seconds_bucket{le="1.0"} 100.0
traitstream_end_to_end_seconds_bucket{le="+Inf"} 100.0
traitstream_end_to_end_seconds_count 100.0
traitstream_end_to_end_seconds_sum 21.5
traitstream_worker_events_total{outcome="applied"} 100.0
traitstream_worker_events_total{outcome="duplicate"} 3.0
"""


# --- when a phase's records are applied ------------------------------------------------


def test_applied_when_every_acknowledged_identify_is() -> None:
    watch = stats.AppliedWatch()
    watch.expect(acked=1_000, failed_requests=0)
    watch.expect(acked=500, failed_requests=0)
    assert watch.done_at(1_499, now=10.0) is None
    assert watch.done_at(1_500, now=11.0) == 11.0
    watch.reset()
    assert watch.acked == 0
    assert watch.done_at(0, now=12.0) == 12.0
    # A load that added nothing finishes when it is looked at, not before it ran.
    watch.expect(acked=0, failed_requests=0)
    assert watch.done_at(0, now=20.0) == 20.0


def test_after_a_failed_request_the_count_must_also_settle() -> None:
    """A failed request may have written part of its records: they are applied and
    counted too, so reaching the acknowledged count is not enough on its own."""
    watch = stats.AppliedWatch(settle_s=2.0)
    watch.expect(acked=1_000, failed_requests=1)
    assert watch.done_at(1_000, now=10.0) is None  # the partial request's records may follow
    assert watch.done_at(1_200, now=11.0) is None
    assert watch.done_at(1_200, now=12.5) is None
    assert watch.done_at(1_200, now=13.0) == 11.0  # finished when the count last moved


# --- percentiles and ratios -----------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert stats.percentile(values, 0.0) == 1.0
    assert stats.percentile(values, 1.0) == 4.0
    assert stats.percentile(values, 0.5) == pytest.approx(2.5)
    assert stats.percentile(list(range(101)), 0.99) == pytest.approx(99.0)
    assert stats.percentile([7.0], 0.99) == 7.0


def test_percentile_of_nothing_is_unknown_and_q_is_checked() -> None:
    assert stats.percentile([], 0.5) is None
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        stats.percentile([1.0], 1.5)


def test_rate_and_ratio_handle_missing_and_zero() -> None:
    assert stats.rate(30_000, 2.0) == 15_000
    assert stats.rate(5, 0.0) is None
    assert stats.ratio(12_500, 50_000) == 0.25
    assert stats.ratio(None, 50_000) is None
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(1.0, None) is None


# --- Prometheus histograms ------------------------------------------------------------


def test_parse_histogram_reads_cumulative_buckets_in_order() -> None:
    histogram = stats.parse_histogram(EXPOSITION, "traitstream_end_to_end_seconds")
    assert histogram.buckets == ((0.1, 10.0), (0.25, 60.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0))
    assert histogram.count == 100.0


def test_metric_total_filters_by_label_and_ignores_longer_names() -> None:
    assert exposition.metric_total(EXPOSITION, "traitstream_worker_events_total", outcome="applied") == 100.0
    assert exposition.metric_total(EXPOSITION, "traitstream_worker_events_total") == 103.0
    # _count and _sum are other metrics, not samples of the bucket series.
    assert exposition.metric_total(EXPOSITION, "traitstream_end_to_end_seconds") == 0.0


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    histogram = stats.parse_histogram(EXPOSITION, "traitstream_end_to_end_seconds")
    # rank 50 of 100 lies in (0.1, 0.25], 40 of its 50 observations in: 0.1 + 0.15 * 40/50.
    assert stats.histogram_quantile(0.5, histogram) == pytest.approx(0.22)
    # rank 99 lies in (0.5, 1.0], 9 of its 10: 0.5 + 0.5 * 9/10.
    assert stats.histogram_quantile(0.99, histogram) == pytest.approx(0.95)
    # rank 5 lies in the first bucket, which starts at 0.
    assert stats.histogram_quantile(0.05, histogram) == pytest.approx(0.05)


def test_histogram_quantile_in_the_inf_bucket_answers_the_highest_bound() -> None:
    histogram = stats.Histogram(((0.5, 1.0), (1.0, 2.0), (math.inf, 10.0)))
    assert stats.histogram_quantile(0.99, histogram) == 1.0


def test_histogram_quantile_of_an_empty_histogram_is_unknown() -> None:
    assert stats.histogram_quantile(0.5, stats.Histogram(())) is None
    assert stats.histogram_quantile(0.5, stats.Histogram(((1.0, 0.0), (math.inf, 0.0)))) is None


def test_share_within_a_bound_is_exact_where_the_quantile_interpolates() -> None:
    histogram = stats.Histogram(((0.5, 980.0), (1.0, 989.0), (2.5, 1000.0), (math.inf, 1000.0)))
    assert stats.share_within(1.0, histogram) == pytest.approx(0.989)
    # 1.1% applied after a second: the interpolated p99 lies above it too.
    assert stats.histogram_quantile(0.99, histogram) > 1.0
    assert stats.share_within(math.inf, histogram) == 1.0
    assert stats.share_within(1.0, stats.Histogram(((1.0, 0.0), (math.inf, 0.0)))) is None
    with pytest.raises(ValueError, match=r"0\.75 is not a bucket bound"):
        stats.share_within(0.75, histogram)


def test_windows_cut_a_phase_and_add_up_to_it() -> None:
    def seen(fast: float, slow: float) -> stats.Histogram:
        return stats.Histogram(((1.0, fast), (math.inf, fast + slow)))

    windows = stats.Windows(seen(10, 0), at=100.0)
    windows.scrape(100.2, seen(11, 0))  # too soon after the first: skipped
    windows.scrape(105.0, seen(50, 2))
    windows.scrape(110.0, seen(90, 2))
    windows.scrape(110.4, seen(95, 5), closing=True)  # the last, however soon
    assert [round(t, 1) for t, _ in windows.cut] == [5.0, 5.0, 0.4]
    assert [h.buckets for _, h in windows.cut] == [
        ((1.0, 40.0), (math.inf, 42.0)),
        ((1.0, 40.0), (math.inf, 40.0)),
        ((1.0, 5.0), (math.inf, 8.0)),
    ]
    assert windows.whole().buckets == ((1.0, 85.0), (math.inf, 90.0))
    assert sum(h.count for _, h in windows.cut) == windows.whole().count


def test_delta_and_merge_give_one_window_over_several_workers() -> None:
    before = stats.Histogram(((0.1, 5.0), (1.0, 5.0), (math.inf, 5.0)))
    after = stats.Histogram(((0.1, 15.0), (1.0, 25.0), (math.inf, 25.0)))
    other = stats.Histogram(((0.1, 0.0), (1.0, 20.0), (math.inf, 20.0)))
    window = stats.merge_histograms([stats.histogram_delta(after, before), other])
    assert window.buckets == ((0.1, 10.0), (1.0, 40.0), (math.inf, 40.0))
    # rank 20 of 40: 10 below 0.1, then 10 of the next 30 in (0.1, 1.0].
    assert stats.histogram_quantile(0.5, window) == pytest.approx(0.1 + 0.9 * 10 / 30)


# --- targets, profile summary, workload, load generator -------------------------------


def test_targets_judge_each_figure_and_leave_unmeasured_ones_open() -> None:
    results = {
        "figures": {
            "end_to_end": {"identifies_per_s": 9_000.0, "ratio": 0.3},
            "batched_ingestion": {"identifies_per_s": 99_000.0},
            "single_identify_edge": {"requests_per_s": 5_400.0, "latency_ms": {"p99": 9.0}},
            "single_identify": {"requests_per_s": 5_100.0, "latency_ms": {"p99": 21.0}},
            "steady": {"rate_target": 4_500.0, "e2e_latency_s": {"p99": 0.4}},
        }
    }
    met = {t.name.split(" (")[0]: t.met for t in report.targets(results)}
    assert met["end-to-end applied rate ≥ 0.25 of the PostgreSQL bulk upsert"] is True
    assert met["batched ingestion acknowledged"] is False
    assert met["single-identify requests, edge tier"] is True
    # The rate is met, the p99 is not.
    assert met["single-identify requests, workers applying on the same cores"] is False
    assert met["end-to-end p99 at half the maximum rate"] is True
    assert met["worker memory flat over the soak"] is None


def test_a_ratio_just_under_its_target_does_not_print_as_the_target() -> None:
    results = {"figures": {"end_to_end": {"identifies_per_s": 24_377.0, "ratio": 0.2458}}}
    (e2e,) = [t for t in report.targets(results) if t.name.startswith("end-to-end applied rate")]
    assert e2e.met is False
    assert e2e.measured == "0.246 (24,377/s)"


def test_summary_prints_both_single_identify_figures_and_their_targets() -> None:
    results = {
        "started_at": "2026-11-22T00:00:00+00:00",
        "machine": {"cpus": 2, "load_average_start": 0.5, "load_average_end": 3.0},
        "limits": {"broker_produce": {"rate": 400_000.0, "what": "produce"}},
        "figures": {
            "single_identify_edge": {
                "requests_per_s": 5_400.0,
                "latency_ms": {"p50": 4.0, "p99": 9.0},
                "bound_by": "broker_produce",
                "ratio": 0.0085,
            },
            "single_identify": {
                "requests_per_s": 2_600.0,
                "latency_ms": {"p50": 5.0, "p99": 25.0},
                "bound_by": "broker_produce",
                "ratio": 0.0065,
            },
        },
    }
    text = report.summary(results)
    assert "single identifies (16 clients; workers stopped)  5,400 req/s" in text
    assert "single identifies (16 clients; workers running)  2,600 req/s" in text
    assert "single-identify latency, workers stopped  p50 4.00 ms   p99 9.00 ms" in text
    assert "[met   ] single-identify requests, edge tier (workers stopped): 5,400 req/s" in text
    assert "[MISSED] single-identify requests, workers applying on the same cores: 2,600 req/s" in text


def test_summary_prints_the_latency_in_both_request_sizes_and_judges_the_first() -> None:
    results = {
        "started_at": "2026-11-22T00:00:00+00:00",
        "machine": {"cpus": 2, "load_average_start": 0.5, "load_average_end": 3.0},
        "limits": {},
        "figures": {
            "steady": {
                "rate_target": 9_900.0,
                "identifies_per_request": 100,
                "e2e_latency_s": {"p50": 0.2, "p99": 0.5, "within_1s": 0.9975},
                "e2e_windows": [{"p99": 0.41}, {"p99": 0.62}, {"p99": None}],
            },
            "steady_end_to_end_requests": {
                "rate_target": 9_900.0,
                "identifies_per_request": 500,
                "e2e_latency_s": {"p50": 0.3, "p99": 1.2},
            },
        },
    }
    text = report.summary(results)
    assert (
        "end-to-end latency at 9,900/s (half the maximum, 100 identifies a request): "
        "p50 0.200 s   p99 0.500 s   applied within 1 s 99.75%" in text
    )
    assert "  p99 in each window of the phase: 0.41  0.62  n/a" in text
    assert (
        "end-to-end latency at 9,900/s (the same rate, 500 identifies a request): "
        "p50 0.300 s   p99 1.200 s   applied within 1 s n/a" in text
    )
    # Only the first phase is judged.
    assert "[met   ] end-to-end p99 at half the maximum rate: 0.500 s at 9,900/s" in text


def test_profile_summary_charges_samples_to_the_innermost_known_area() -> None:
    collapsed = "\n".join(
        [
            "process 1:main;run (traitstream/worker/consumer.py:99);decode (traitstream/avro/codec.py:90) 30",
            "main;run (traitstream/worker/consumer.py:99);apply (traitstream/store/profiles.py:170);"
            "execute (psycopg/cursor.py:100) 50",
            "main;handle (traitstream/edge/context.py:57);encode_body (traitstream/avro/binary.py:104) 15",
            "main;mystery (somewhere.py:1) 5",
            "malformed line",
        ]
    )
    summary = profile.summarize(collapsed)
    assert summary.samples == 100
    assert dict(summary.areas) == {
        "PostgreSQL (client and waits)": 50,
        "Avro decode and checks": 30,
        "Avro encode": 15,
        "other: mystery (somewhere.py:1)": 5,
    }
    assert summary.leaves[0] == ("execute (psycopg/cursor.py:100)", 50)


def test_workload_bodies_are_valid_thrivestack_batches() -> None:
    (body,) = workload.bodies(1, 50, 1000, seed=3)
    events = thrivestack.parse(body, Envelope("bench", "r", 1_700_000_000_000))
    assert len(events) == 50
    assert all(e.user_id and e.user_id.startswith("bench-user-") for e in events)
    single = orjson.loads(workload.bodies(1, 1, 1000, seed=3)[0])
    assert isinstance(single, dict)
    assert workload.bodies(2, 5, 100, seed=9) == workload.bodies(2, 5, 100, seed=9)


def test_user_sample_never_repeats_a_user_in_one_batch() -> None:
    sample = workload.user_sample(random.Random(1), 10_000, 5_000)
    assert len(sample) == len(set(sample)) == 5_000


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"])
def test_load_generator_accepts_loopback(url: str) -> None:
    host, port = check_loopback(url)
    assert port > 0 and host


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080", "http://example.com", "https://127.0.0.1:1"])
def test_load_generator_refuses_anything_else(url: str) -> None:
    with pytest.raises(ValueError, match=r"loopback|http://"):
        check_loopback(url)


# --- the hot paths the profile led to ------------------------------------------------


def _random_event(rng: random.Random) -> IdentifyEvent:
    def text() -> str:
        return "".join(rng.choice('aé中😀"\\\n') for _ in range(rng.randrange(0, 200)))

    def value() -> object:
        scalars = [None, True, False, 7, -5, 2**40, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, "ascii ~\x7f"]
        return rng.choice([*scalars, text(), [1, "a"], {"k": text()}])

    operations = []
    for _ in range(rng.randrange(0, 70)):
        op = rng.choice(list(Op))
        trait = None if op is Op.CLEAR_ALL else text()
        operations.append(Operation(op, trait, None if op in (Op.UNSET, Op.CLEAR_ALL) else value()))
    return IdentifyEvent(
        workspace_id=text() or "w",
        user_id=rng.choice([None, text()]),
        dialect=text(),
        event_time_ms=rng.randrange(-62_135_596_800_000, 253_402_300_799_999),
        received_time_ms=rng.randrange(0, 2**41),
        response_id=text() or "r",
        event_index=rng.randrange(0, 2**31 - 1),
        anonymous_ids=tuple(text() or "a" for _ in range(rng.randrange(0, 70))),
        profile_created_at_ms=rng.choice([None, rng.randrange(-(10**12), 10**13)]),
        dedupe_key=rng.choice([None, text()]),
        context=rng.choice([None, {"a": value()}]),
        operations=tuple(operations),
        kind=rng.choice(list(Kind)),
    )


def _exact_millis(value: object) -> object:
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    return value


def test_hand_written_v1_encoding_and_decoding_match_fastavro_byte_for_byte() -> None:
    rng = random.Random(5)
    schemas = LocalSchemas()
    for _ in range(300):
        event = _random_event(rng)
        current = event.kind is Kind.ALIAS  # written in the current revision, the rest in the first
        if current:
            event = event._replace(previous_id=rng.choice(["p", "prév" * rng.randrange(1, 40)]))
        schema = codec._READER if current else codec._FIRST
        schema_id = codec.writer_id(event, schemas)
        out = io.BytesIO()
        out.write(b"\x00" + struct.pack(">I", schema_id))
        schemaless_writer(out, schema, codec.to_record(event))
        data = out.getvalue()
        assert codec.encode(event, schema_id) == data
        assert codec.encode_reference(event, data[:5]) == data
        body = io.BytesIO(data[5:])
        reference = {k: _exact_millis(v) for k, v in schemaless_reader(body, schema, None).items()}
        assert binary.read_record(data, 5, current) == ({"previous_id": None} | reference, len(data))


def test_valid_events_round_trip_through_the_hand_written_path() -> None:
    event = IdentifyEvent(
        workspace_id="ws",
        user_id="u1",
        anonymous_ids=("dev-1", "dev-2"),
        dialect="thrivestack",
        event_time_ms=1_700_000_000_123,
        received_time_ms=1_700_000_000_456,
        profile_created_at_ms=-5,
        response_id="r1",
        event_index=70_000,
        dedupe_key="k",
        context={"ip": "127.0.0.1"},
        operations=(
            Operation(Op.SET, "plan", {"tier": "pro"}),
            Operation(Op.ADD, "n", 2),
            Operation(Op.UNSET, "x"),
        ),
    )
    assert codec.decode(codec.encode(event, LOCAL_SCHEMA_ID), LocalSchemas()) == event


@pytest.mark.parametrize(
    "body",
    [
        b"\x05",  # enum index -3
        b"\x00\x04ws\x01",  # union branch -1
        b"\x00\x7f",  # a string longer than the record
        b"\x00\x04w\xff",  # invalid UTF-8 ... and short
    ],
)
def test_hand_written_decoder_refuses_corrupt_bytes(body: bytes) -> None:
    data = b"\x00" + struct.pack(">I", LOCAL_SCHEMA_ID) + body
    with pytest.raises(InvalidRecord) as caught:
        codec.decode(data, LocalSchemas())
    assert caught.value.reason == "avro_decode"


def test_value_check_shortcut_agrees_with_the_full_walk() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(41):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    check_value({"a": [1, {"b": "x"}], "c": '{"[not nested]"}' * 30}, "traits")  # brackets in strings only
    with pytest.raises(LimitExceeded, match="nested more than 40"):
        check_value(deep, "traits")
    with pytest.raises(InvalidRequest, match=r"traits\.a\[1\] contains a NUL"):
        check_value({"a": ["ok", "x\x00"]}, "traits")
    with pytest.raises(InvalidRequest, match="key with a NUL"):
        check_value({"k\x00": 1}, "traits")
    check_value({"a": "\\u0000 is text, not a NUL"}, "traits")


def test_results_never_record_a_password() -> None:
    from tests.bench.runner import _public

    assert _public("postgresql://app:s3cret@127.0.0.1:5432/db") == "postgresql://app:***@127.0.0.1:5432/db"
    assert _public("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert _public(Path("bench-results")) == "bench-results"


def test_the_cli_finds_the_bench_in_the_checkout_it_runs_from() -> None:
    from traitstream.commands import bench

    runner = bench.bench_runner()
    assert runner.__name__ == "tests.bench.runner"
    assert hasattr(runner, "BenchOptions")


def test_the_cli_refuses_the_bench_outside_a_source_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traitstream.commands import bench

    # An installed wheel: the package in site-packages, no tests beside it.
    installed = tmp_path / "lib" / "site-packages" / "traitstream" / "commands" / "bench.py"
    monkeypatch.setattr(bench, "__file__", str(installed))
    with pytest.raises(SystemExit, match="traitstream bench runs from a source checkout: make bench"):
        bench.bench_runner()
