"""The browser SDKs users already run (Segment's analytics.js, Amplitude's and
RudderStack's), bundled into a page that headless Chromium loads from another origin
than the edge's: CORS preflights and headers for real, identifies landing once in the
profile, the page leaving with events still queued (sendBeacon or keepalive fetch),
and an answer lost after the edge accepted the request (the SDK retries, the profile
changes once). No request may leave 127.0.0.1."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.proxy import LosingProxy
from tests.support.sdks import applied_since, node_ready, outcomes, run_node, wait_metrics
from tests.support.stack import Stack

SDKS = ["segment", "amplitude", "rudderstack"]
INGESTION = ("/v1/", "/2/httpapi", "/beacon/v1/batch")


@pytest.fixture(scope="module", autouse=True)
def packages() -> None:
    node_ready()


@pytest.fixture(scope="module")
def metrics(stack: Stack) -> Stack:
    wait_metrics(stack)
    return stack


def user_of(sdk: str) -> str:
    return f"browser-{sdk}-{uuid.uuid4().hex[:8]}"


def drive(stack: Stack, sdk: str, edge: str, user: str, **options: Any) -> dict[str, Any]:
    traits = {"email": f"{user}@example.com", "plan": "pro"}
    return run_node(
        "browser.mjs",
        {"sdk": sdk, "edge": edge, "writeKey": stack.api_key, "userId": user, "traits": traits} | options,
    )


def sent_to_edge(report: dict[str, Any], edge: str) -> list[dict[str, Any]]:
    return [r for r in report["requests"] if r["url"].startswith(edge) and r["method"] == "POST"]


def check_profile(stack: Stack, sdk: str, user: str) -> None:
    profile = stack.wait_profile(user, lambda p: p["traits"].get("plan") == "pro")
    assert profile["traits"]["email"] == f"{user}@example.com"
    if sdk == "amplitude":
        assert profile["traits"]["visits"] == 1  # an $add: applied twice would read 2


@pytest.mark.parametrize("sdk", SDKS)
def test_identify_lands_once(metrics: Stack, sdk: str) -> None:
    stack, user = metrics, user_of(sdk)
    before = outcomes(stack)
    report = drive(stack, sdk, stack.url, user)
    posts = sent_to_edge(report, stack.url)
    assert posts, report
    check_profile(stack, sdk, user)
    applied, _ = applied_since(stack, before)
    assert applied == 1


@pytest.mark.parametrize("sdk", SDKS)
def test_leaving_the_page_sends_by_beacon_and_lands_once(metrics: Stack, sdk: str) -> None:
    stack, user = metrics, user_of(sdk)
    recorder = LosingProxy(stack.url, lose=0)
    before = outcomes(stack)
    with recorder.running() as edge:
        report = drive(stack, sdk, edge, user, unload=True, settleMs=1500)
        check_profile(stack, sdk, user)
    carrying = [seen for seen in recorder.seen if seen.method == "POST" and user.encode() in seen.body]
    # The SDK held the identify back (a long flush interval) until the page left.
    assert len(carrying) == 1 and carrying[0].at * 1000 >= report["unloadAt"], carrying
    if sdk == "rudderstack":
        assert carrying[0].path.startswith("/beacon/v1/batch?writeKey=")
    applied, _ = applied_since(stack, before)
    assert applied == 1


@pytest.mark.parametrize("sdk", SDKS)
def test_an_answer_lost_after_the_edge_took_it_is_retried_and_lands_once(metrics: Stack, sdk: str) -> None:
    stack, user = metrics, user_of(sdk)
    proxy = LosingProxy(
        stack.url, lose=1, losing=lambda method, path: method == "POST" and path.startswith(INGESTION)
    )
    before = outcomes(stack)
    with proxy.running() as edge:
        drive(stack, sdk, edge, user, settleMs=3000)
        check_profile(stack, sdk, user)
    carrying = [seen for seen in proxy.seen if seen.method == "POST" and user.encode() in seen.body]
    assert len(carrying) >= 2 and carrying[0].lost, [(s.path, s.lost) for s in proxy.seen]
    applied, duplicates = applied_since(stack, before)
    assert applied == 1 and duplicates >= 1
