"""Keys across every dialect, on the real pipeline: unknown and revoked keys are 401,
keys without the scope 403, each in its dialect's error shape; a key never reaches
another workspace's profiles. Keys are made and revoked with the CLI."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.support.stack import Broker, Stack, wait_until
from traitstream.store.keys import key_id_of

OTHER = "other-workspace"


@pytest.fixture(scope="module")
def stack(kafka: Broker, database_url: str) -> Iterator[Stack]:
    # Key lookups are cached for key_cache_s; a short cache lets a revoke show quickly.
    running = Stack(kafka.bootstrap, database_url, extra_env={"TRAITSTREAM_KEY_CACHE_S": "0.2"})
    try:
        running.start(workers=2)
        yield running
    finally:
        running.stop()


def cli(stack: Stack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "traitstream", "keys", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def create_key(stack: Stack, workspace: str, scopes: str, *extra: str) -> str:
    return cli(stack, "create", "--workspace", workspace, "--scopes", scopes, *extra)


@dataclass(frozen=True)
class Dialect:
    name: str
    send: Callable[[Stack, str, str], httpx.Response]
    """(stack, key, user id) -> the answer to one identify setting trait ``plan``."""
    error: Callable[[dict[str, Any]], str]
    """The message of an error body in this dialect's shape (fails on any other shape)."""


def _thrivestack(stack: Stack, key: str, user: str) -> httpx.Response:
    return stack.post("/api/identify", {"user_id": user, "traits": {"plan": key[-6:]}}, key=key)


def _amplitude(stack: Stack, key: str, user: str) -> httpx.Response:
    identification = orjson.dumps({"user_id": user, "user_properties": {"plan": key[-6:]}}).decode()
    return httpx.post(f"{stack.url}/identify", data={"api_key": key, "identification": identification})


def _datafast(stack: Stack, key: str, user: str) -> httpx.Response:
    body = {"user_id": user, "datafast_visitor_id": str(uuid.uuid4()), "plan": key[-6:]}
    return stack.post("/api/v1/identify", body, key=key)


def _segment(stack: Stack, key: str, user: str) -> httpx.Response:
    body = {"batch": [{"type": "identify", "userId": user, "traits": {"plan": key[-6:]}}]}
    return httpx.post(f"{stack.url}/v1/batch", json=body, auth=(key, ""))


def _thrivestack_error(body: dict[str, Any]) -> str:
    assert body["success"] is False and set(body) == {"success", "message", "response_id"}
    return str(body["message"])


def _amplitude_error(body: dict[str, Any]) -> str:
    assert set(body) == {"code", "error"}
    return str(body["error"])


def _datafast_error(body: dict[str, Any]) -> str:
    assert body["status"] == "error" and set(body["error"]) == {"code", "message"}
    return str(body["error"]["message"])


def _segment_error(body: dict[str, Any]) -> str:
    assert body["success"] is False and set(body) == {"success", "code", "message"}
    return str(body["message"])


DIALECTS = [
    Dialect("thrivestack", _thrivestack, _thrivestack_error),
    Dialect("amplitude", _amplitude, _amplitude_error),
    Dialect("datafast", _datafast, _datafast_error),
    Dialect("segment", _segment, _segment_error),
]
ALL_WRITE = "identify_api,identify:write,profiles:read"


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_unknown_key_is_401_in_the_dialects_shape(stack: Stack, dialect: Dialect) -> None:
    response = dialect.send(stack, "ts_no_such_key", "u")
    assert response.status_code == 401
    assert "unknown or revoked" in dialect.error(response.json())


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_key_without_the_scope_is_403_in_the_dialects_shape(stack: Stack, dialect: Dialect) -> None:
    reader = create_key(stack, stack.workspace, "profiles:read,profiles:delete")
    response = dialect.send(stack, reader, "u")
    assert response.status_code == 403
    assert "lacks the scope" in dialect.error(response.json())


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_revoked_key_is_refused_after_the_cache(stack: Stack, dialect: Dialect) -> None:
    key = create_key(stack, stack.workspace, ALL_WRITE)
    user = f"revoke-{dialect.name}-{uuid.uuid4().hex[:6]}"
    assert dialect.send(stack, key, user).status_code == 200
    stack.wait_profile(user, lambda p: p["traits"].get("plan") == key[-6:])
    assert cli(stack, "revoke", key_id_of(key)) == f"revoked {key_id_of(key)}"
    refused = wait_until(
        lambda: (r := dialect.send(stack, key, user)).status_code == 401 and r,
        10,
        "the revoke to take effect",
    )
    assert "unknown or revoked" in dialect.error(refused.json())


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_a_key_reaches_only_its_own_workspace(stack: Stack, dialect: Dialect) -> None:
    user = f"shared-{dialect.name}-{uuid.uuid4().hex[:6]}"
    ours = create_key(stack, stack.workspace, ALL_WRITE)
    theirs = create_key(stack, OTHER, ALL_WRITE)
    assert dialect.send(stack, theirs, user).status_code == 200
    assert dialect.send(stack, ours, user).status_code == 200

    def profile(key: str) -> dict[str, Any] | None:
        response = httpx.get(f"{stack.url}/api/profiles/{user}", headers={"Authorization": f"Bearer {key}"})
        return response.json() if response.status_code == 200 else None

    mine = wait_until(lambda: profile(ours), 30, "our profile")
    other = wait_until(lambda: profile(theirs), 30, "the other workspace's profile")
    assert mine["traits"]["plan"] == ours[-6:]
    assert other["traits"]["plan"] == theirs[-6:]
    assert mine["profile_id"] != other["profile_id"]


def test_website_ids_are_per_workspace_and_end_with_their_keys(stack: Stack) -> None:
    site = f"site-{uuid.uuid4().hex[:6]}"
    website_key = create_key(
        stack, stack.workspace, "identify:write", "--prefix", "df_", "--website-id", site
    )
    create_key(stack, OTHER, "identify:write", "--prefix", "df_", "--website-id", f"{site}-theirs")
    token = create_key(stack, stack.workspace, "identify:write", "--prefix", "dft_")
    assert website_key.startswith("df_") and token.startswith("dft_")

    def send(website: str) -> httpx.Response:
        body = {"user_id": "u-site", "datafast_visitor_id": str(uuid.uuid4())}
        return stack.post("/api/v1/identify", body, key=token, params={"websiteId": website})

    assert send(site).status_code == 200
    assert send(f"{site}-theirs").status_code == 404
    cli(stack, "revoke", key_id_of(website_key))
    gone = wait_until(lambda: (r := send(site)).status_code == 404 and r, 10, "the website to be forgotten")
    assert _datafast_error(gone.json()) == f"no website {site!r} (websiteId) in this workspace"
