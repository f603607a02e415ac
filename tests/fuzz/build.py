"""An AddressSanitizer build of the compiled modules, in a folder of its own.

With clang, each ``src/traitstream/compiled/*.c`` is built with
``-fsanitize=address,fuzzer-no-link`` (the edge coverage libFuzzer steers by),
and clang's AddressSanitizer and libFuzzer runtimes are linked into one shared
library that Python preloads: atheris then finds libFuzzer there and sees the
coverage of both the C code and the instrumented Python. Without clang, the
system compiler (GCC) builds with ``-fsanitize=address`` and its own runtime is
preloaded: memory errors are still caught, but GCC's runtime answers libFuzzer's
coverage hooks itself, so that fuzzing is blind. ``run`` puts the folder ahead of
the package's own ``compiled/``, so the sanitized modules are the ones imported.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).resolve().parents[2] / "src" / "traitstream" / "compiled"
RUNTIME = "asan_with_fuzzer.so"


@dataclass(frozen=True)
class Build:
    folder: Path
    preload: tuple[Path, ...]
    coverage: bool
    """Whether libFuzzer sees the code's coverage (clang), or fuzzes blind (GCC)."""


def compiler() -> list[str]:
    chosen = os.environ.get("CC") or shutil.which("clang") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(chosen)


def _is_clang(cc: list[str]) -> bool:
    done = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=False)
    return "clang" in done.stdout


def _file(cc: list[str], name: str) -> Path | None:
    done = subprocess.run([*cc, f"-print-file-name={name}"], capture_output=True, text=True, check=False)
    path = Path(done.stdout.strip())
    return path.resolve() if done.returncode == 0 and path.is_absolute() and path.exists() else None


def asan_missing() -> str | None:
    """Why no AddressSanitizer build can be made here; None when one can."""
    cc = compiler()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.c"
        source.write_text("int probe(void) { return 0; }\n")
        command = [*cc, "-shared", "-fPIC", "-fsanitize=address", str(source), "-o", f"{folder}/probe.so"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            return f"no C compiler ({exc})"
    if done.returncode != 0:
        return f"the C compiler {cc[0]} cannot build with -fsanitize=address: {done.stderr.strip()[:200]}"
    if _is_clang(cc):
        needed = ("libclang_rt.asan-x86_64.a", "libclang_rt.fuzzer_no_main-x86_64.a")
        if any(_file(cc, name) is None for name in needed):
            return f"{cc[0]} lacks the AddressSanitizer or libFuzzer runtime ({', '.join(needed)})"
    elif _file(cc, "libasan.so") is None:
        return f"the C compiler {cc[0]} has no shared AddressSanitizer runtime to preload"
    return None


def _clang_runtime(cc: list[str], out: Path) -> Path:
    """clang's AddressSanitizer and libFuzzer runtimes as one preloadable library.
    Its pre-init object is left out (a shared library cannot carry one); at link
    time libFuzzer's coverage callbacks replace the sanitizer's weak stand-ins."""
    asan, fuzzer, asan_cxx = (
        _file(cc, f"libclang_rt.{name}-x86_64.a") for name in ("asan", "fuzzer_no_main", "asan_cxx")
    )
    assert asan is not None and fuzzer is not None
    copy = out / "asan.a"
    shutil.copyfile(asan, copy)
    subprocess.run(["ar", "d", str(copy), "asan_preinit.cpp.o"], check=True, capture_output=True)
    archives = [str(copy), str(fuzzer), *([str(asan_cxx)] if asan_cxx else [])]
    runtime = out / RUNTIME
    command = [*cc, "-shared", "-o", str(runtime), "-Wl,--whole-archive", *archives, "-Wl,--no-whole-archive"]
    subprocess.run(
        [*command, "-lpthread", "-ldl", "-lrt", "-lm", "-lstdc++"], check=True, capture_output=True
    )
    copy.unlink()
    return runtime


def build(out: Path) -> Build:
    """Compile every compiled module with AddressSanitizer into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cc = compiler()
    clang = _is_clang(cc)
    flags = ["-fsanitize=address,fuzzer-no-link"] if clang else ["-fsanitize=address"]
    flags += ["-fno-omit-frame-pointer", "-g", "-O1", f"-I{sysconfig.get_paths()['include']}", f"-I{SOURCES}"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for source in sorted(SOURCES.glob("*.c")):
        target = out / f"{source.stem}{suffix}"
        done = subprocess.run(
            [*cc, "-shared", "-fPIC", *flags, str(source), "-o", str(target)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"building {source.name} with AddressSanitizer failed:\n{done.stderr}")
    if clang:
        return Build(out, (_clang_runtime(cc, out),), coverage=True)
    runtime, cxx = _file(cc, "libasan.so"), _file(cc, "libstdc++.so")
    assert runtime is not None
    # libstdc++ loads before the Python exceptions atheris turns into C++ ones, so the
    # sanitizer can find the real __cxa_throw.
    return Build(out, (runtime, *([cxx] if cxx else [])), coverage=False)


def environment(built: Build) -> dict[str, str]:
    """The environment of a fuzzing process: the sanitizer's runtime preloaded, no
    leak report (CPython keeps objects alive at exit by design), the compiled
    implementation required."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(str(path) for path in built.preload)
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1:quarantine_size_mb=64"
    env["TRAITSTREAM_IMPL"] = "c"
    env["TRAITSTREAM_FUZZ_ASAN_DIR"] = str(built.folder)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def main(argv: list[str]) -> int:
    """``python -m tests.fuzz.build FOLDER``: build there, print the environment to use."""
    reason = asan_missing()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    built = build(Path(argv[0]))
    env = environment(built)
    for name in ("LD_PRELOAD", "ASAN_OPTIONS", "TRAITSTREAM_IMPL", "TRAITSTREAM_FUZZ_ASAN_DIR", "PYTHONPATH"):
        print(f"{name}={shlex.quote(env[name])}")
    if not built.coverage:
        print(
            "warning: no clang: memory errors are caught, but the fuzzing is not coverage-guided",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
