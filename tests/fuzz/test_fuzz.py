"""A bounded fuzzing run of every target, under AddressSanitizer.

The sanitized build goes to a temporary folder; each target then runs for a
fixed number of inputs from its seed corpus, with a fixed seed, in a process of
its own. A memory error, a crash, or any difference between a compiled entry
point and its Python reference fails the test with the fuzzer's report (the
input that caused it is in the report, as bytes and base64). ``make fuzz`` runs
the same targets for long.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import build, seeds, targets
from tests.fuzz.targets import TARGETS

RUNS = {"avro_read": 8000, "avro_encode": 1500, "dialects": 2500, "stamps": 8000}
"""Inputs per target: a few seconds each on a small machine."""


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> build.Build:
    reason = build.asan_missing()
    if reason:
        pytest.skip(f"no AddressSanitizer build possible: {reason}")
    return build.build(tmp_path_factory.mktemp("asan"))


def test_every_target_has_a_bounded_run() -> None:
    assert set(RUNS) == set(TARGETS)


@pytest.mark.parametrize("target", sorted(RUNS))
def test_target_survives_a_bounded_run(target: str, sanitized: build.Build, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    argv = [sys.executable, "-m", "tests.fuzz.run", target, f"-runs={RUNS[target]}", "-seed=1"]
    argv += ["-max_len=4096", "-timeout=30", f"-artifact_prefix={tmp_path}/", str(corpus)]
    seeds.write(target, corpus)
    done = subprocess.run(argv, env=build.environment(sanitized), capture_output=True, text=True, timeout=600)
    report = "\n".join(line for line in done.stderr.splitlines() if "Instrumenting" not in line)
    assert done.returncode == 0, report[-6000:]
    assert f"Done {RUNS[target]} runs" in done.stderr, report[-3000:]
    if sanitized.coverage:
        assert "inline 8-bit counters" in done.stderr  # libFuzzer saw the C code's coverage


def test_a_difference_from_the_reference_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The targets compare, not only run: a reference that reads another event
    than the fast path makes ``avro_read`` fail on a valid record."""
    from traitstream.avro import codec, fast
    from traitstream.events import IdentifyEvent

    if fast.READ is None:
        pytest.skip("the compiled codec is not in use (TRAITSTREAM_IMPL)")
    (record,) = seeds.corpus("avro_read")[:1]
    targets.avro_read(record)  # agrees as it is
    real = codec.decode_reference

    def other(data: bytes, writer: object = None) -> IdentifyEvent:
        return real(data)._replace(dialect="another")

    monkeypatch.setattr(codec, "decode_reference", other)
    with pytest.raises(targets.Mismatch, match="fast decoder read"):
        targets.avro_read(record)
