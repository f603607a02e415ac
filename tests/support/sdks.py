"""Running the JavaScript SDKs of tests/sdks (headless Chromium and Node) from
pytest, and counting what the workers applied."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import Stack, settled, wait_until

SDK_DIR = Path(__file__).resolve().parent.parent / "sdks"
CHROMIUM = os.environ.get("TRAITSTREAM_CHROMIUM", "/usr/bin/chromium")


def node_ready() -> None:
    """The npm packages of tests/sdks, installed from its lock file when absent
    (``make test`` does the same before the suite)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise AssertionError(
            "Node.js and npm are needed for the SDK tests (Debian: apt-get install nodejs npm)"
        )
    if not (SDK_DIR / "node_modules" / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK_DIR, check=True, timeout=600)


def run_node(script: str, args: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Run ``tests/sdks/<script>`` with ``args`` as JSON; its last line of output is JSON."""
    done = subprocess.run(
        ["node", script, json.dumps(args)],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"TRAITSTREAM_CHROMIUM": CHROMIUM},
    )
    lines = done.stdout.strip().splitlines()
    report: dict[str, Any] = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if done.returncode != 0:
        raise AssertionError(
            f"node {script} failed ({done.returncode}): {report.get('failure')}\n"
            f"console: {report.get('console')}\nstderr: {done.stderr[-3000:]}"
        )
    return report


def outcomes(stack: Stack) -> tuple[float, float]:
    """(applied, duplicate) events over every worker."""

    def read(outcome: str) -> float:
        return stack.workers_metric("traitstream_worker_events_total", f'outcome="{outcome}"')

    return read("applied"), read("duplicate")


def wait_metrics(stack: Stack) -> None:
    def up() -> bool:
        try:
            outcomes(stack)
        except httpx.HTTPError:
            return False
        return True

    wait_until(up, 30, "the workers' metrics")


def applied_since(stack: Stack, before: tuple[float, float]) -> tuple[float, float]:
    """How many events were applied and found duplicate since ``before``, once the
    counts hold still."""
    applied = settled(lambda: outcomes(stack)[0] - before[0], timeout=20, every=1.0)
    duplicate = outcomes(stack)[1] - before[1]
    return applied, duplicate
