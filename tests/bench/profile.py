"""Sampling profiles of the running edge and workers with py-spy, and where their
time goes: each sample is charged to the innermost frame that belongs to a known
area of the data path (parsing, Avro, Kafka, Postgres, …).

py-spy attaches to a running process with ptrace (root, or the ptrace capability).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (area, substrings of a frame's file or function); the first area that matches
# the innermost matching frame wins, so the order goes from specific to general.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dialect parsing and validation", ("traitstream/dialects/",)),
    (
        "Avro encode",
        (
            "encode (traitstream/avro",
            "encode_body (",
            "_long (traitstream/avro",
            "_string (traitstream/avro",
            "_optional_string (traitstream/avro",
            "_dumps (traitstream/avro",
            "to_record (traitstream/avro",
            "fastavro/_write",
        ),
    ),
    ("Avro decode and checks", ("traitstream/avro/", "fastavro/")),
    (
        "Kafka produce and delivery reports",
        ("confluent_kafka", "traitstream/edge/publisher.py", "traitstream/kafka_producer.py"),
    ),
    ("Kafka consume and commit", ("consume (traitstream/worker", "commit (traitstream/worker")),
    ("Redis dedupe", ("traitstream/worker/dedupe.py", "redis/")),
    ("plan and merge", ("traitstream/worker/plan.py", "traitstream/merge.py")),
    ("PostgreSQL (client and waits)", ("traitstream/store/", "psycopg")),
    ("metrics", ("prometheus_client",)),
    ("logging", ("logging/", "traitstream/logs.py")),
    ("auth and request wrapper", ("traitstream/edge/auth.py", "traitstream/edge/context.py")),
    ("HTTP server and framework", ("uvicorn/", "starlette/", "fastapi/", "httptools", "h11/", "anyio/")),
    ("routes", ("traitstream/edge/routes/",)),
    ("worker loop", ("traitstream/worker/",)),
    ("event loop", ("asyncio/", "uvloop")),
)


@dataclass(frozen=True, slots=True)
class Summary:
    samples: int
    areas: list[tuple[str, int]]
    leaves: list[tuple[str, int]]


def available() -> str | None:
    """The py-spy executable, if installed (next to this interpreter or on PATH)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, *, subprocesses: bool = False) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); the
    caller waits for the returned process."""
    exe = available()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install -e '.[bench]')")
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "100",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
    ]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def area_of(frames: list[str]) -> str:
    """The area of the innermost frame that has one; else ``other: <leaf>``."""
    for frame in reversed(frames):
        for area, marks in AREAS:
            if any(mark in frame for mark in marks):
                return area
    return f"other: {frames[-1] if frames else '?'}"


def _frames(stack: str) -> list[str]:
    frames = stack.split(";")
    # --subprocesses prefixes each stack with the process; it is no frame.
    if frames and frames[0].startswith("process "):
        frames = frames[1:]
    return frames


def summarize(text: str, top: int = 25) -> Summary:
    """Collapsed stacks (``frame;frame;… count`` per line) to time per area and per leaf."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        # Threads waiting in the kernel (poll, epoll, recv) are idle, not work.
        if frames and _idle(frames[-1]):
            continue
        total += count
        areas[area_of(frames)] += count
        leaves[frames[-1] if frames else "?"] += count
    return Summary(total, areas.most_common(), leaves.most_common(top))


def _idle(leaf: str) -> bool:
    return leaf.startswith(("select (", "poll (", "wait (", "_worker (concurrent", "run_forever"))


def render(title: str, summary: Summary) -> str:
    lines = [f"## {title}", "", f"{summary.samples} samples of work (idle waits left out)", ""]
    lines.append("| area | share |")
    lines.append("| --- | ---: |")
    for area, count in summary.areas:
        lines.append(f"| {area} | {100 * count / max(1, summary.samples):.1f}% |")
    lines += ["", "| innermost frame | share |", "| --- | ---: |"]
    for leaf, count in summary.leaves:
        lines.append(f"| `{leaf}` | {100 * count / max(1, summary.samples):.1f}% |")
    return "\n".join(lines) + "\n"
