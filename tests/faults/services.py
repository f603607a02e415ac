"""Throwaway Redis and PostgreSQL servers that a fault test may stop, kill and restart.

Each listens on a free port on 127.0.0.1 and lives in a temporary directory; the
machine's own Redis and PostgreSQL are never touched. PostgreSQL refuses to run as
root, so when the tests run as root its tools run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.stack import LOG_DIR, free_port, wait_until


class RedisServer:
    """``redis-server`` without persistence: a restart loses every key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ping, 10, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def keys(self, pattern: str = "*") -> int:
        with redis.Redis(port=self.port, socket_timeout=2) as client:
            return sum(1 for _ in client.scan_iter(pattern, count=1000))

    def pause(self) -> None:
        """SIGSTOP: connections stay open and every command hangs (until the client's timeout)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """kill -9: no shutdown, and without persistence every key is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PostgresCluster:
    """A private PostgreSQL cluster (``initdb`` + ``pg_ctl``) in a temporary directory."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ts-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, timeout=timeout, capture_output=True)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        # fsync=off only matters when the machine itself crashes; a crashed server
        # still recovers every commit from the WAL in the OS cache. (Asynchronous
        # commit, by contrast, would lose acknowledged transactions on a crash.)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash: every session dies mid-transaction and recovery runs on start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("fast")
        if self.log_path.exists():
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, LOG_DIR / f"postgres-{self.port}.log")
        shutil.rmtree(self.root, ignore_errors=True)
