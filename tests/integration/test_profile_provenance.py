"""``?include=provenance`` through the real pipeline: which event last wrote each
trait of user and anonymous profiles, and what rows stored before provenance was
kept answer."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from tests.support.stack import Stack, wait_until
from traitstream.events import user_profile_id


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def read(stack: Stack, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", params=params, headers=stack.headers(), timeout=10)


def test_a_users_traits_name_their_last_writes(stack: Stack) -> None:
    user = uid("prov-user")
    first = stack.post(
        "/api/identify",
        [{"user_id": user, "traits": {"plan": "free", "email": "a@example.com"}, "message_id": f"{user}-m1"}],
    )
    assert first.status_code == 200, first.text
    stack.wait_profile(user)
    second = stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro"}})
    assert second.status_code == 200, second.text
    segment = stack.post(
        "/v1/identify",
        {
            "userId": user,
            "traits": {"seats": 4},
            "messageId": f"{user}-seg",
            "timestamp": "2025-01-02T03:04:05Z",
        },
    )
    assert segment.status_code == 200, segment.text
    stack.wait_profile(user, lambda p: p["traits"].get("plan") == "pro" and "seats" in p["traits"])
    answer = read(stack, f"/api/profiles/{user}", include="provenance").json()
    provenance = answer["provenance"]
    assert set(provenance) == set(answer["traits"]) == {"plan", "email", "seats"}
    assert provenance["email"] | {"event_time": None} == {
        "event_time": None,
        "source": "thrivestack",
        "message_id": f"{user}-m1",
        "op": "set",
    }
    # Without a dedupe key, the message id is the response id the edge answered with.
    assert provenance["plan"]["message_id"] == second.json()["response_id"]
    assert (provenance["plan"]["source"], provenance["plan"]["op"]) == ("thrivestack", "set")
    assert provenance["seats"] == {
        "event_time": "2025-01-02T03:04:05+00:00",
        "source": "segment",
        "message_id": f"{user}-seg",
        "op": "set",
    }
    assert "provenance" not in read(stack, f"/api/profiles/{user}").json()


def test_an_anonymous_profiles_operations_name_themselves(stack: Stack) -> None:
    device = uid("prov-device")
    identification = {
        "device_id": device,
        "insert_id": f"{device}-i1",
        "user_properties": {"$set": {"theme": "dark"}, "$add": {"visits": 2}, "$setOnce": {"ref": "ad"}},
    }
    sent = httpx.post(
        f"{stack.url}/identify",
        data={"api_key": stack.api_key, "identification": json.dumps(identification)},
        timeout=10,
    )
    assert sent.status_code == 200, sent.text

    def answer() -> dict[str, Any] | None:
        response = read(stack, "/api/profiles", anonymous_id=device, include="provenance")
        return response.json() if response.status_code == 200 else None

    profile = wait_until(answer, 30, "the anonymous profile")
    ops = {trait: p["op"] for trait, p in profile["provenance"].items()}
    assert ops == {"theme": "set", "visits": "add", "ref": "set_once"}
    assert {p["message_id"] for p in profile["provenance"].values()} == {f"{device}-i1"}
    assert {p["source"] for p in profile["provenance"].values()} == {"amplitude"}


@pytest.mark.parametrize(
    ("column", "stamps"),
    [
        (
            "stamps",
            {"w": {"a": [0, 0]}, "o": {"b": [1, 0]}, "e": [[1_700_000_000_000, "m-1"], [5_000, "r:0"]]},
        ),
        ("trait_meta", {"w": {"a": [1_700_000_000_000, "m-1", 0]}, "o": {"b": [5_000, "r:0", 0]}}),
    ],
)
def test_rows_stored_before_provenance_answer_the_event_time(
    stack: Stack, column: str, stamps: dict[str, Any]
) -> None:
    user = uid("prov-old")
    ws = stack.workspace
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO profiles (profile_id, workspace_id, user_id, traits, {}, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, now(), now())"
            ).format(sql.Identifier(column)),
            (
                user_profile_id(ws, user),
                ws,
                user,
                orjson.dumps({"a": 1, "b": 2}).decode(),
                json.dumps(stamps),
            ),
        )
    provenance = read(stack, f"/api/profiles/{user}", include="provenance").json()["provenance"]
    unknown = {"source": None, "message_id": None}
    assert provenance == {
        "a": {"event_time": "2023-11-14T22:13:20+00:00", **unknown, "op": None},
        "b": {"event_time": "1970-01-01T00:00:05+00:00", **unknown, "op": "set_once"},
    }
    # The worker still reads the row; a new write names its event, the old trait keeps its time.
    stack.post("/api/identify", {"user_id": user, "traits": {"c": 3}, "message_id": f"{user}-new"})
    stack.wait_profile(user, lambda p: "c" in p["traits"])
    again = read(stack, f"/api/profiles/{user}", include="provenance").json()["provenance"]
    assert again["a"] == provenance["a"] and again["b"] == provenance["b"]
    assert (again["c"]["source"], again["c"]["message_id"], again["c"]["op"]) == (
        "thrivestack",
        f"{user}-new",
        "set",
    )


def test_include_takes_only_provenance(stack: Stack) -> None:
    response = read(stack, "/api/profiles/anyone", include="history")
    assert response.status_code == 400
    assert (
        "query parameter include must be 'provenance', got 'history'" in response.json()["error"]["message"]
    )
    missing = read(stack, "/api/profiles", anonymous_id=uid("nobody"), include="provenance")
    assert missing.status_code == 404
