import gc
import logging
from pathlib import Path

import pytest

from traitstream import runtime
from traitstream.runtime import GEN0_THRESHOLD, collector_paused, missing_extensions, tune_gc

SRC = Path(__file__).resolve().parents[2] / "src"


def test_tune_gc_freezes_what_exists_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        # Cycles are still found: the collector is tuned, not off.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_collector_is_off_in_the_block_and_as_it_was_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a batch that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_every_c_extension_was_built() -> None:
    """A C compiler is on every machine this project installs on (and in the image's
    build stage): a missing extension means a failed build, and a slower pipeline."""
    assert missing_extensions() == [], "reinstall with a C compiler (make install)"


def test_the_extension_list_names_every_c_source() -> None:
    sources = {".".join(path.relative_to(SRC).with_suffix("").parts) for path in SRC.rglob("*.c")}
    assert sources == set(runtime.EXTENSIONS)
    setup = (SRC.parent / "setup.py").read_text()
    assert all(f'"{name}"' in setup for name in runtime.EXTENSIONS)


def test_a_missing_extension_is_a_warning_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "EXTENSIONS", ("traitstream.no_such_extension",))
    with caplog.at_level(logging.WARNING):
        runtime.warn_if_not_compiled()
    assert "traitstream.no_such_extension" in caplog.text and "more slowly" in caplog.text


def test_an_extension_that_does_not_load_counts_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "built_for_another_python.py").write_text('raise ImportError("undefined symbol")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runtime, "EXTENSIONS", ("built_for_another_python", "traitstream.avro._v1c"))
    assert missing_extensions() == ["built_for_another_python"]
