"""``TRAITSTREAM_IMPL`` really switches: each choice is made in a fresh process,
as the variable is read when the package's hot paths are imported."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from traitstream import native

SRC = Path(__file__).resolve().parents[2] / "src"

_REPORT = """
import json
from traitstream.avro import codec, fast
from traitstream import merge, native
from traitstream.dialects import common, thrivestack, traits
print(json.dumps({"active": native.active(), "fast_read": fast.READ is not None}))
"""


def _run(impl: str | None, code: str = _REPORT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != native.ENV}
    if impl is not None:
        env[native.ENV] = impl
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_python_never_imports_the_compiled_modules() -> None:
    done = _run("python", _REPORT + "import sys\nassert not [m for m in sys.modules if '.compiled._' in m]\n")
    assert done.returncode == 0, done.stderr
    report = done.stdout.splitlines()[0]
    assert '"fast_read": false' in report
    for name in native.MODULES:
        assert f'"{name}": "python"' in report


def test_c_runs_every_compiled_module() -> None:
    if native.missing():
        pytest.skip(f"this installation lacks {native.missing()}")
    done = _run("c")
    assert done.returncode == 0, done.stderr
    report = done.stdout.splitlines()[0]
    assert '"fast_read": true' in report
    for name in native.MODULES:
        assert f'"{name}": "c"' in report


def test_c_fails_loudly_when_a_compiled_module_is_missing() -> None:
    refuse = (
        "import importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'traitstream.compiled._merge':\n"
        "            raise ImportError('built for another Python')\n"
        "sys.meta_path.insert(0, Refuse())\n"
    )
    done = _run("c", refuse + _REPORT)
    assert done.returncode != 0
    assert "ImplementationError" in done.stderr and "traitstream.compiled._merge" in done.stderr
    unset = _run(None, refuse + _REPORT)  # unset: the Python twin serves, and says so
    assert unset.returncode == 0, unset.stderr
    assert '"traitstream.compiled._merge": "python"' in unset.stdout


def test_an_unknown_choice_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "rust")
    with pytest.raises(native.ImplementationError, match="TRAITSTREAM_IMPL='rust'"):
        native.requested()
    done = _run("rust")
    assert done.returncode != 0 and "TRAITSTREAM_IMPL='rust' is not one of" in done.stderr


def test_only_compiled_modules_are_loaded() -> None:
    with pytest.raises(ValueError, match="not a compiled module"):
        native.use("os")


def test_every_c_source_is_a_module_setup_builds() -> None:
    sources = {"traitstream.compiled." + path.stem for path in (SRC / "traitstream").rglob("*.c")}
    assert sources == set(native.MODULES)
    assert all(path.parent.name == "compiled" for path in (SRC / "traitstream").rglob("*.[ch]"))
    setup = (SRC.parent / "setup.py").read_text()
    assert all(f'"{name.rsplit(".", 1)[1]}"' in setup for name in native.MODULES)


def test_a_missing_module_is_a_warning_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setattr(native, "MODULES", ("traitstream.compiled._no_such_module",))
    with caplog.at_level(logging.WARNING):
        native.log_choice()
    assert "traitstream.compiled._no_such_module" in caplog.text and "more slowly" in caplog.text


def test_the_python_choice_is_logged_not_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(native.ENV, "python")
    with caplog.at_level(logging.INFO):
        native.log_choice()
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "Python implementation" in caplog.text


def test_a_codec_written_for_another_schema_is_declined() -> None:
    """A field added to the schema without its lines in the C codec: the reference
    serves (and ``active`` says so), or the process stops when C is required."""
    code = "from traitstream.avro import fast\nfast.SCHEMA_FINGERPRINT = 'another'\nfast._load()\n"
    check = code + "from traitstream import native\nprint(native.active()['traitstream.compiled._v1c'])\n"
    if native.missing():
        pytest.skip(f"this installation lacks {native.missing()}")
    unset = _run(None, check)
    assert unset.returncode == 0 and unset.stdout.strip() == "python", unset.stderr
    required = _run("c", code)
    assert required.returncode != 0 and "SCHEMA_FINGERPRINT" in required.stderr
