"""Fuzz one target: ``python -m tests.fuzz.run TARGET [libFuzzer flags] [corpus folders]``.

Run it in the environment ``build.environment`` makes (the sanitizer's runtime
preloaded, ``TRAITSTREAM_FUZZ_ASAN_DIR`` naming the sanitized build): the
sanitized modules are imported instead of the package's, the Python reference is
instrumented for coverage, and the first mismatch or memory error stops the run
with the input that caused it (libFuzzer writes it as ``crash-…``). With no corpus
folder, a temporary one is seeded from ``seeds``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python -m tests.fuzz.run TARGET [libFuzzer flags] [corpus folders]")
    target, rest = argv[0], argv[1:]
    import traitstream.compiled

    asan_dir = os.environ.get("TRAITSTREAM_FUZZ_ASAN_DIR")
    if not asan_dir:
        raise SystemExit("TRAITSTREAM_FUZZ_ASAN_DIR names no sanitized build (see tests/fuzz/build.py)")
    traitstream.compiled.__path__.insert(0, asan_dir)
    with atheris.instrument_imports(include=["traitstream", "fastavro", "tests.fuzz"]):
        from tests.fuzz import seeds, targets
    for name in ("_v1c", "_checks", "_merge"):
        module = sys.modules.get(f"traitstream.compiled.{name}")
        if module is None or not str(module.__file__).startswith(asan_dir):
            raise SystemExit(f"traitstream.compiled.{name} is not the sanitized build")
    fuzz = targets.TARGETS[target]
    if not any(not arg.startswith("-") for arg in rest):
        rest.append(str(seeds.write(target, Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-")))))
    atheris.Setup([sys.argv[0], "-use_value_profile=1", *rest], fuzz)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
