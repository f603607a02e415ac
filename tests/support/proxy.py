"""A forwarding HTTP proxy on 127.0.0.1 that loses answers on purpose.

``LosingProxy`` hands every request to the edge and passes its answer back, except
for the first ``lose`` requests that ``losing`` picks: those reach the edge (which
accepts them) and then the proxy closes the client's connection without a word, as
a network that fails after delivery would (or, with ``answer``, replaces the edge's
answer with that status, as a load balancer timing out would). A client that retries then sends the same
message again, which must change the profile once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    lost: bool
    at: float
    """When it arrived (epoch seconds)."""


def posts(method: str, path: str) -> bool:
    return method == "POST"


@dataclass
class LosingProxy:
    target: str
    lose: int = 1
    losing: Callable[[str, str], bool] = posts
    answer: int | None = None
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _decide(self, method: str, path: str) -> bool:
        with self._lock:
            lost = self.lose > 0 and self.losing(method, path)
            if lost:
                self.lose -= 1
            return lost

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve until the block ends; yields the proxy's base URL."""
        proxy = self
        client = httpx.Client(base_url=self.target, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                lost = proxy._decide(self.command, self.path)
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, self.path, headers, body, lost, time.time()))
                answer = client.request(self.command, self.path, content=body, headers=headers)
                if lost and proxy.answer is None:
                    self.close_connection = True
                    return
                if lost:
                    answer = httpx.Response(proxy.answer, content=b"lost on the way")
                self.send_response(answer.status_code)
                for name, value in answer.headers.multi_items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() not in ("date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_OPTIONS = do_PUT = do_DELETE = _relay

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="losing-proxy", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            client.close()
