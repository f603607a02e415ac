"""The profile changes topic, end to end: identifies through the edge and straight onto
the topic, a merge, an erasure, late and duplicate writes; what the workers publish,
what ``traitstream changes tail`` prints, and the relay's metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx

from tests.support.changes import assert_changes_consistent, read_changes, wait_outbox_empty
from tests.support.publish import event, publish
from tests.support.stack import Stack, wait_until
from traitstream.events import Op, Operation, anonymous_profile_id, user_profile_id


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def key_of(stack: Stack, profile_id: uuid.UUID) -> str:
    return f"{stack.workspace}:{profile_id}"


def test_every_change_is_published_once_per_version_and_replays_to_the_profile(stack: Stack) -> None:
    user, device = uid("chg"), uid("device")
    ws = stack.workspace
    publish(stack.bootstrap, stack.topic, [event(ws, anon=(device,), t=1_000, color="red")])
    wait_until(
        lambda: (
            httpx.get(
                f"{stack.url}/api/profiles", params={"anonymous_id": device}, headers=stack.headers()
            ).status_code
            == 200
        ),
        20,
        "the anonymous profile",
    )
    assert (
        stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro", "seats": 3}}).status_code
        == 200
    )
    stack.wait_profile(user)
    # A merge: the user arrives with the device's anonymous id.
    publish(stack.bootstrap, stack.topic, [event(ws, user=user, anon=(device,), t=2_000_000_000_000, x=1)])
    stack.wait_profile(user, lambda p: "color" in p["traits"])
    # Writes that change nothing: an older set, and the same write again.
    late = event(ws, user=user, t=1, plan="free")
    publish(stack.bootstrap, stack.topic, [late, event(ws, user=user, ops=[Operation(Op.ADD, "n", 2)])])
    stack.wait_profile(user, lambda p: p["traits"].get("n") == 2)
    wait_outbox_empty(stack)

    changes = read_changes(stack.bootstrap, stack.changes_topic, stack.partitions)
    mine = changes[key_of(stack, user_profile_id(ws, user))].records
    kinds = [(r["version"], r["kind"]) for _v, r in mine if r is not None]
    assert kinds == [(1, "update"), (2, "merge"), (3, "update")], kinds  # the late set published nothing
    merge = mine[1][1]
    assert merge is not None and merge["merged_from"] == [str(anonymous_profile_id(ws, device))]
    assert {c["trait"] for c in merge["changes"]} == {"color", "x"}
    first = mine[0][1]
    assert first is not None
    plan = next(c for c in first["changes"] if c["trait"] == "plan")
    assert plan["source"] == "thrivestack" and plan["op"] == "set" and plan["new_json"] == '"pro"'
    assert plan["message_id"]  # the response id: the call carried no message_id
    # The anonymous profile merged away: its own key ends with a tombstone.
    anon_records = changes[key_of(stack, anonymous_profile_id(ws, device))].records
    assert anon_records[-1] == (None, None)

    # Erasure: an erase record with every trait removed, then a tombstone; a later
    # identify goes on from the next version.
    assert httpx.delete(f"{stack.url}/api/profiles/{user}", headers=stack.headers()).status_code == 202
    wait_until(lambda: stack.profile(user) is None, 20, "the profile to be erased")
    assert stack.post("/api/identify", {"user_id": user, "traits": {"fresh": True}}).status_code == 200
    stack.wait_profile(user)
    outcome = assert_changes_consistent(stack, ws, [user])
    mine = read_changes(stack.bootstrap, stack.changes_topic, stack.partitions)[
        key_of(stack, user_profile_id(ws, user))
    ].records
    tail = [(r["version"], r["kind"]) if r is not None else "tombstone" for _v, r in mine[3:]]
    assert tail == [(4, "erase"), "tombstone", (5, "update")], tail
    erase = mine[3][1]
    assert erase is not None and {c["trait"] for c in erase["changes"]} == {
        "plan",
        "seats",
        "color",
        "x",
        "n",
    }
    assert all(c["new_json"] is None for c in erase["changes"])
    assert outcome.traits[str(user_profile_id(ws, user))] == {"fresh": True}


def test_the_relay_reports_what_it_published(stack: Stack) -> None:
    user = uid("metrics")
    assert stack.post("/api/identify", {"user_id": user, "traits": {"a": 1}}).status_code == 200
    stack.wait_profile(user)
    wait_outbox_empty(stack)
    wait_until(
        lambda: stack.workers_metric("traitstream_changes_published_total", 'kind="update"') >= 1,
        20,
        "a published change in the metrics",
    )
    assert stack.workers_metric("traitstream_changes_relay_shards") == 64  # every shard has its relay
    wait_until(lambda: stack.workers_metric("traitstream_changes_outbox_backlog") == 0, 10, "no backlog")


def test_changes_tail_prints_json_lines_of_one_workspace(stack: Stack) -> None:
    user = uid("tail")
    assert stack.post("/api/identify", {"user_id": user, "traits": {"tailed": "yes"}}).status_code == 200
    stack.wait_profile(user)
    wait_outbox_empty(stack)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "traitstream",
            "changes",
            "tail",
            "--from-beginning",
            "--workspace",
            stack.workspace,
        ],
        env=stack.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            record = json.loads(line)
            lines.append(record)
            if record.get("user_id") == user:
                break
        found = lines[-1]
        assert found["changes"][0]["trait"] == "tailed" and found["changes"][0]["new_json"] == '"yes"'
        assert all(r.get("workspace_id", stack.workspace) == stack.workspace for r in lines)
        assert {"partition", "offset"} <= set(found)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_an_alias_publishes_a_merge_and_a_tombstone_for_the_previous_users_profile(stack: Stack) -> None:
    old, new = uid("alias-old"), uid("alias-new")
    ws = stack.workspace
    assert stack.post("/v1/identify", {"userId": old, "traits": {"plan": "free"}}).status_code == 200
    stack.wait_profile(old)
    assert stack.post("/v1/alias", {"previousId": old, "userId": new}).status_code == 200
    stack.wait_profile(new, lambda p: p["traits"] == {"plan": "free"})
    outcome = assert_changes_consistent(stack, ws, [new])
    changes = read_changes(stack.bootstrap, stack.changes_topic, stack.partitions)
    [(_value, merge)] = changes[key_of(stack, user_profile_id(ws, new))].records
    assert merge is not None and merge["kind"] == "merge" and merge["version"] == 1
    assert merge["merged_from"] == [str(user_profile_id(ws, old))]
    [plan] = merge["changes"]
    assert (plan["trait"], plan["old_json"], plan["new_json"], plan["op"]) == ("plan", None, '"free"', "set")
    assert plan["source"] == "segment"  # the provenance of the merged profile's own write
    old_records = changes[key_of(stack, user_profile_id(ws, old))].records
    assert [r["version"] if r else None for _v, r in old_records] == [1, None]
    assert outcome.traits[str(user_profile_id(ws, new))] == {"plan": "free"}
