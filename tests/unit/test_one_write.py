"""An identify's answer leaves the edge in one write: uvicorn's own HTTP protocols
(httptools and h11), fed requests by hand, write to a transport that records each
write (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from traitstream.edge.app import OneWrite, send_whole
from traitstream.edge.context import json_response


class RecordingTransport(asyncio.Transport):
    """A connection that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.events: list[str] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        self.events.append("close")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def whole_app(scope: Any, receive: Any, send: Any) -> None:
    await send_whole(json_response({"success": True}), scope, receive, send)


async def plain_app(scope: Any, receive: Any, send: Any) -> None:
    await json_response({"success": True})(scope, receive, send)


PROTOCOLS = pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, H11Protocol])


def serve(
    app: Any, request: bytes, protocol_class: Any = HttpToolsProtocol, answers: int = 1
) -> RecordingTransport:
    async def run() -> RecordingTransport:
        config = Config(app=app, lifespan="off", proxy_headers=False, log_config=None)
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(200):  # the app runs as a task: let it finish
            done = protocol.cycle is not None and protocol.cycle.response_complete
            if done and len(transport.writes) >= answers:
                break
            await asyncio.sleep(0)
        return transport

    return asyncio.run(run())


REQUEST = b"POST /api/identify HTTP/1.1\r\nHost: edge\r\nContent-Length: 2\r\n\r\n{}"


@PROTOCOLS
def test_the_status_line_headers_and_body_go_out_in_one_write(protocol_class: Any) -> None:
    transport = serve(whole_app, REQUEST, protocol_class)
    assert len(transport.writes) == 1
    head, body = transport.writes[0].split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 16" in head.lower()
    assert body == b'{"success":true}'
    assert not transport.closed  # the connection stays open for the next request


@PROTOCOLS
def test_the_same_answer_without_it_takes_two_writes(protocol_class: Any) -> None:
    # What send_whole saves: uvicorn writes the head as soon as it is sent.
    transport = serve(plain_app, REQUEST, protocol_class, answers=2)
    assert len(transport.writes) >= 2
    assert b"".join(transport.writes) == serve(whole_app, REQUEST, protocol_class).writes[0]


@PROTOCOLS
def test_a_connection_the_answer_closes_gets_the_answer_first(protocol_class: Any) -> None:
    closing = REQUEST.replace(b"Host: edge\r\n", b"Host: edge\r\nConnection: close\r\n")
    transport = serve(whole_app, closing, protocol_class)
    assert transport.events == ["write", "close"]
    assert transport.writes[0].endswith(b'{"success":true}')


@PROTOCOLS
def test_pipelined_requests_get_their_answers_whole_and_in_order(protocol_class: Any) -> None:
    transport = serve(whole_app, REQUEST + REQUEST, protocol_class, answers=2)
    assert len(transport.writes) == 2
    assert all(
        w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b'{"success":true}') for w in transport.writes
    )


def test_under_h11_the_answer_is_out_before_the_next_request_is_refused() -> None:
    # h11 reads the next pipelined request as soon as a response completes; a
    # malformed one is answered 400 on the spot, after the identify's answer.
    transport = serve(whole_app, REQUEST + b"NOT HTTP\r\n\r\n", H11Protocol, answers=2)
    first, *refusal = transport.writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b'{"success":true}')
    assert b"".join(refusal).startswith(b"HTTP/1.1 400 ")
    assert transport.events[-1] == "close"


def test_other_servers_get_the_answer_as_usual() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:  # no uvicorn cycle behind it
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(send_whole(json_response({"a": 1}), {"type": "http"}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_one_write_hands_on_nothing_until_flushed() -> None:
    transport = RecordingTransport()
    whole = OneWrite(transport)
    whole.write(b"a")
    whole.write(b"b")
    assert transport.writes == [] and not whole.is_closing()
    whole.flush()
    whole.flush()
    assert transport.writes == [b"ab"]


def test_an_answer_to_a_client_that_left_is_dropped_not_written() -> None:
    transport = RecordingTransport()
    whole = OneWrite(transport)
    whole.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.close()  # the connection dropped while the body was awaited
    whole.flush()  # a closed transport may raise on write: nothing is written
    assert transport.writes == []
