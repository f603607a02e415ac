"""Long fuzzing runs: ``python -m tests.fuzz [--seconds N] [TARGET ...]`` (``make fuzz``).

Builds the sanitized modules in a temporary folder, then fuzzes each target (all
by default) for ``--seconds``, one after the other. Each keeps its corpus in
``.fuzz/<target>/`` (seeded from ``seeds`` the first time), so the next run
starts where this one stopped; a crash or mismatch is written to
``.fuzz/crash-<target>-…`` and makes the run fail.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz import build, seeds
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(sorted(TARGETS))} (default: all)")
    parser.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    parser.add_argument("--jobs", type=int, default=1, help="fuzzing processes per target")
    args = parser.parse_args(argv)
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"no target named {', '.join(sorted(unknown))}")
    reason = build.asan_missing()
    if reason:
        print(f"cannot fuzz: {reason}", file=sys.stderr)
        return 1
    failed = []
    with tempfile.TemporaryDirectory(prefix="traitstream-asan-") as folder:
        built = build.build(Path(folder))
        if not built.coverage:
            print("warning: without clang the fuzzing is not coverage-guided", file=sys.stderr)
        for target in args.targets or sorted(TARGETS):
            corpus = ROOT / ".fuzz" / target
            if not corpus.exists() or not any(corpus.iterdir()):
                seeds.write(target, corpus)
            command = [sys.executable, "-m", "tests.fuzz.run", target, f"-max_total_time={args.seconds}"]
            command += ["-max_len=4096", "-timeout=30", f"-artifact_prefix={ROOT / '.fuzz'}/crash-{target}-"]
            command += [f"-jobs={args.jobs}", f"-workers={args.jobs}"] if args.jobs > 1 else []
            print(f"fuzzing {target} for {args.seconds} s", file=sys.stderr, flush=True)
            if subprocess.run([*command, str(corpus)], env=build.environment(built), check=False).returncode:
                failed.append(target)
    if failed:
        print(f"failed: {', '.join(failed)} (inputs in .fuzz/)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
