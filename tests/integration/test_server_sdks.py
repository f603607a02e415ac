"""The server-side SDKs users already run, each pointed at the edge through a proxy
that loses the answer to their first delivery after the edge accepted it: the SDK
retries, and its identify changes the profile once.

Python: RudderStack's (traits in ``context.traits``, gzip by default), Segment's (with
gzip on) and Amplitude's. Node.js: RudderStack's (gzip by default), Segment's and
Amplitude's."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable

import pytest
from amplitude import Amplitude, Config, EventOptions, Identify
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from tests.support.proxy import LosingProxy, Seen
from tests.support.sdks import applied_since, node_ready, outcomes, run_node, wait_metrics
from tests.support.stack import Stack, wait_until

TRAITS = {"plan": "pro", "seats": 3}


@pytest.fixture(scope="module")
def metrics(stack: Stack) -> Stack:
    wait_metrics(stack)
    return stack


def send_rudderstack(stack: Stack, edge: str, user: str) -> None:
    errors: list[Exception] = []
    client = RudderClient(
        stack.api_key, host=edge, max_retries=4, on_error=lambda e, _b: errors.append(e), upload_interval=0.05
    )
    client.identify(user, TRAITS)
    client.flush()
    client.shutdown()
    assert errors == []


def send_segment(stack: Stack, edge: str, user: str) -> None:
    errors: list[Exception] = []
    client = SegmentClient(
        write_key=stack.api_key,
        host=edge,
        gzip=True,
        max_retries=4,
        on_error=lambda e, _b: errors.append(e),
        upload_interval=0.05,
    )
    client.identify(user, TRAITS)
    client.flush()
    client.shutdown()
    assert errors == []


def send_amplitude(stack: Stack, edge: str, user: str) -> None:
    answers: list[int] = []
    client = Amplitude(
        stack.api_key,
        Config(
            server_url=f"{edge}/2/httpapi",
            flush_queue_size=1,
            flush_interval_millis=50,
            flush_max_retries=4,
            callback=lambda event, code, message=None: answers.append(code),
        ),
    )
    identity = Identify().add("visits", 1)
    for name, value in TRAITS.items():
        identity.set(name, value)
    client.identify(identity, EventOptions(user_id=user))
    client.flush()
    wait_until(lambda: answers, 30, "the SDK's callback")
    client.shutdown()
    assert answers == [200]


PYTHON: dict[str, Callable[[Stack, str, str], None]] = {
    "rudderstack": send_rudderstack,
    "segment": send_segment,
    "amplitude": send_amplitude,
}
GZIPPED = {("python", "rudderstack"), ("python", "segment"), ("node", "rudderstack")}
# Amplitude's SDKs give an event up when its connection fails without an answer, as
# they cannot tell whether it arrived; they retry a 5xx. Their first answer is lost as
# a load balancer that timed out waiting for the edge would lose it: a 503 instead.
LOST_AS = {"amplitude": 503}


def check_once(
    stack: Stack, user: str, seen: list[Seen], before: tuple[float, float], amplitude: bool
) -> None:
    profile = stack.wait_profile(user, lambda p: p["traits"].get("plan") == "pro")
    assert profile["traits"]["seats"] == 3
    if amplitude:
        assert profile["traits"]["visits"] == 1  # an $add: applied twice would read 2
    applied, duplicates = applied_since(stack, before)
    assert applied == 1 and duplicates >= 1
    assert len(seen) >= 2 and seen[0].lost and not seen[-1].lost


def carrying(proxy: LosingProxy, user: str, gzipped: bool) -> list[Seen]:
    posts = [s for s in proxy.seen if s.method == "POST"]
    if gzipped:
        assert all(s.headers.get("Content-Encoding") == "gzip" for s in posts), [s.headers for s in posts]
        return [s for s in posts if user.encode() in gzip.decompress(s.body)]
    return [s for s in posts if user.encode() in s.body]


@pytest.mark.parametrize("sdk", sorted(PYTHON))
def test_python_sdk_retry_lands_once(metrics: Stack, sdk: str) -> None:
    user = f"py-{sdk}-{uuid.uuid4().hex[:8]}"
    proxy = LosingProxy(metrics.url, lose=1, answer=LOST_AS.get(sdk))
    before = outcomes(metrics)
    with proxy.running() as edge:
        PYTHON[sdk](metrics, edge, user)
        seen = carrying(proxy, user, ("python", sdk) in GZIPPED)
    check_once(metrics, user, seen, before, amplitude=sdk == "amplitude")


@pytest.mark.parametrize("sdk", ["amplitude", "rudderstack", "segment"])
def test_node_sdk_retry_lands_once(metrics: Stack, sdk: str) -> None:
    node_ready()
    user = f"node-{sdk}-{uuid.uuid4().hex[:8]}"
    proxy = LosingProxy(metrics.url, lose=1, answer=LOST_AS.get(sdk))
    before = outcomes(metrics)
    with proxy.running() as edge:
        run_node(
            "node.mjs",
            {"sdk": sdk, "edge": edge, "writeKey": metrics.api_key, "userId": user, "traits": TRAITS},
        )
        seen = carrying(proxy, user, ("node", sdk) in GZIPPED)
    check_once(metrics, user, seen, before, amplitude=sdk == "amplitude")
