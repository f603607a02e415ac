"""The DataFast dialect through the real edge, broker, workers, Redis and Postgres:
seed 003 verbatim, website keys and account tokens, visitor linking, errors."""

from __future__ import annotations

import uuid

import httpx
import orjson
import psycopg
import pytest

from tests.support.seeds import seed_bytes
from tests.support.stack import Stack, wait_until
from traitstream.events import user_profile_id
from traitstream.store import keys

PATH = "/api/v1/identify"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_key(
    stack: Stack, prefix: str, scopes: set[str], website: str | None = None, workspace: str | None = None
) -> str:
    secret = keys.new_secret(prefix)
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        keys.register(conn, secret, workspace or stack.workspace, frozenset(scopes), website_id=website)
    return secret


def body(user: str, visitor: str | None = None, **traits: object) -> dict[str, object]:
    return {"user_id": user, "datafast_visitor_id": visitor or str(uuid.uuid4()), **traits}


def test_seed_sample_lands_in_the_profile(stack: Stack) -> None:
    response = stack.post(PATH, seed_bytes("datafast_003.json"), headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    sample = orjson.loads(seed_bytes("datafast_003.json"))
    expected_id = str(user_profile_id(stack.workspace, sample["user_id"]))
    assert response.json() == {
        "status": "success",
        "data": {"message": "User identified successfully", "profileId": expected_id},
    }
    profile = stack.wait_profile(sample["user_id"])
    assert profile["profile_id"] == expected_id
    assert profile["traits"] == {"email": "jane@example.com", "plan": "pro"}
    assert profile["anonymous_ids"] == [sample["datafast_visitor_id"]]


def test_visitor_profile_merges_into_the_user(stack: Stack) -> None:
    user, visitor = unique("df-user"), str(uuid.uuid4())
    # The visitor's anonymous profile, from another dialect's anonymous identify.
    anonymous = stack.post("/v1/identify", {"anonymousId": visitor, "traits": {"utm_source": "ad"}})
    assert anonymous.status_code == 200, anonymous.text
    wait_until(
        lambda: (
            httpx.get(
                f"{stack.url}/api/profiles", params={"anonymous_id": visitor}, headers=stack.headers()
            ).status_code
            == 200
        ),
        30,
        "the visitor's anonymous profile",
    )
    response = stack.post(PATH, body(user, visitor, company="Acme", signup_source="invite"))
    assert response.status_code == 200, response.text
    profile = stack.wait_profile(user, lambda p: "utm_source" in p["traits"])
    assert profile["traits"] == {"utm_source": "ad", "company": "Acme", "signup_source": "invite"}
    assert profile["anonymous_ids"] == [visitor]
    assert profile["profile_id"] == response.json()["data"]["profileId"]


def test_website_key_and_account_token(stack: Stack) -> None:
    site = unique("site")
    website_key = new_key(stack, "df_", {"identify:write"}, website=site)
    account = new_key(stack, "dft_", {"identify:write"})
    user_a, user_b = unique("df-a"), unique("df-b")

    assert stack.post(PATH, body(user_a, plan="pro"), key=website_key).status_code == 200
    same_site = stack.post(f"{PATH}?websiteId={site}", body(user_a, seats=3), key=website_key)
    assert same_site.status_code == 200, same_site.text
    other_site = stack.post(f"{PATH}?websiteId=elsewhere", body(user_a), key=website_key)
    assert other_site.status_code == 403
    assert "websiteId 'elsewhere'" in other_site.json()["error"]["message"]

    with_site = stack.post(PATH, body(user_b, plan="team"), key=account, params={"websiteId": site})
    assert with_site.status_code == 200, with_site.text
    assert stack.wait_profile(user_a, lambda p: "seats" in p["traits"])["traits"] == {
        "plan": "pro",
        "seats": 3,
    }
    assert stack.wait_profile(user_b)["traits"] == {"plan": "team"}

    no_site = stack.post(PATH, body(user_b), key=account)
    assert no_site.status_code == 400
    assert no_site.json()["error"] == {
        "code": 400,
        "message": "query parameter websiteId is required with an account token (dft_…)",
    }
    unknown = stack.post(PATH, body(user_b), key=account, params={"websiteId": "no-such-site"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "status": "error",
        "error": {"code": 404, "message": "no website 'no-such-site' (websiteId) in this workspace"},
    }


def test_scopes_and_other_workspaces(stack: Stack) -> None:
    site = unique("site")
    new_key(stack, "df_", {"identify:write"}, website=site)
    read_only_token = new_key(stack, "dft_", {"profiles:read", "identify_api"})
    refused = stack.post(PATH, body("u"), key=read_only_token, params={"websiteId": site})
    assert refused.status_code == 403
    assert refused.json()["error"] == {"code": 403, "message": "the API key lacks the scope identify:write"}

    reader = new_key(stack, "df_", {"profiles:read"})
    assert stack.post(PATH, body("u"), key=reader).status_code == 403

    # A website of another workspace is unknown here.
    foreign_site = unique("foreign")
    new_key(stack, "df_", {"identify:write"}, website=foreign_site, workspace="elsewhere")
    token = new_key(stack, "dft_", {"identify:write"})
    foreign = stack.post(PATH, body("u"), key=token, params={"websiteId": foreign_site})
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"user_id": "u"}, "body.datafast_visitor_id is required"),
        ({"datafast_visitor_id": str(uuid.uuid4())}, "body.user_id is required"),
        ({"user_id": "u", "datafast_visitor_id": "not-a-uuid"}, "body.datafast_visitor_id must be a UUID"),
        ({"user_id": "x" * 256, "datafast_visitor_id": str(uuid.uuid4())}, "body.user_id must be 1 to 255"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(stack: Stack, payload: dict, named: str) -> None:
    response = stack.post(PATH, payload)
    assert response.status_code == 400
    error = response.json()
    assert error["status"] == "error" and error["error"]["code"] == 400
    assert named in error["error"]["message"]


def test_credentials_are_checked_in_the_datafast_shape(stack: Stack) -> None:
    missing = httpx.post(f"{stack.url}{PATH}", json=body("u"))
    assert missing.status_code == 401
    assert missing.json() == {"status": "error", "error": {"code": 401, "message": "missing Bearer token"}}
    unknown = stack.post(PATH, body("u"), key="df_unknown")
    assert unknown.status_code == 401
    assert unknown.json()["error"]["message"] == "unknown or revoked Bearer token"
    big = stack.post(PATH, body("u", blob="x" * 40_000))
    assert big.status_code == 413 and "per identify" in big.json()["error"]["message"]
