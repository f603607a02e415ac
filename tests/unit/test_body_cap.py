"""The edge's cap on identify bodies: an oversized body is refused while it
arrives, not after it was held in memory whole (no network: a fake ASGI receive)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from traitstream.dialects.common import MAX_BODY_BYTES
from traitstream.edge.app import CappedReceive
from traitstream.errors import LimitExceeded


class Chunks:
    """An ASGI receive that hands out ``chunks`` and counts the calls."""

    def __init__(self, *chunks: bytes) -> None:
        self.messages: list[dict[str, Any]] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if self.messages:
            return self.messages.pop(0)
        return {"type": "http.disconnect"}


def scope(content_length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "headers": headers}


async def read_all(receive: Any) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message["more_body"]:
            return messages


CHUNK = 400_000  # three of them pass MAX_BODY_BYTES


def test_a_body_of_exactly_the_limit_passes_unchanged() -> None:
    chunks = (b"a" * CHUNK, b"b" * CHUNK, b"c" * (MAX_BODY_BYTES - 2 * CHUNK))
    messages = asyncio.run(read_all(CappedReceive(scope(MAX_BODY_BYTES), Chunks(*chunks))))
    assert b"".join(m["body"] for m in messages) == b"".join(chunks)
    assert [m["more_body"] for m in messages] == [True, True, False]


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    inner = Chunks(b"x" * CHUNK)
    capped = CappedReceive(scope(MAX_BODY_BYTES + 1), inner)
    with pytest.raises(LimitExceeded, match="request body is 1000001 bytes; the limit is 1000000 bytes"):
        asyncio.run(read_all(capped))
    assert inner.calls == 0 and capped.refused_unread


def test_an_undeclared_body_is_refused_once_past_the_limit() -> None:
    # Chunked transfer: no length up front, so the count of what arrived decides.
    inner = Chunks(*(b"x" * CHUNK for _ in range(4)))
    capped = CappedReceive(scope(), inner)
    with pytest.raises(LimitExceeded, match="request body exceeds the limit of 1000000 bytes"):
        asyncio.run(read_all(capped))
    assert inner.calls == 3  # the fourth chunk is never asked for
    assert not capped.refused_unread  # some of it was read


def test_a_disconnect_is_handed_on() -> None:
    inner = Chunks()
    message = asyncio.run(CappedReceive(scope(), inner)())
    assert message == {"type": "http.disconnect"}
