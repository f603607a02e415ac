"""Stopping a child process: ask, wait, and kill it if it lingers."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen[bytes], grace_s: float, sig: int = signal.SIGTERM) -> tuple[int, bool]:
    """Send ``sig`` (if it still runs), wait up to ``grace_s``, then SIGKILL.
    Returns the exit status and whether it had to be killed."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(grace_s), False
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(), True
