"""The schema-registry path, through the real edge, broker, workers and stores.

The registry here is a small in-test HTTP server that implements exactly the two
endpoints traitstream calls, in the shapes Confluent's Schema Registry documents:

- ``POST /subjects/{subject}/versions`` with ``{"schema": "<Avro JSON>"}`` answers
  ``{"id": n}``; ids are global, an identical schema gets the id it already has,
  an invalid one is a 422 with ``error_code`` 42201;
- ``GET /schemas/ids/{id}`` answers ``{"schema": "…"}`` (plus ``schemaType`` for
  schemas that are not Avro) or a 404 with ``error_code`` 40403;
- anything else is the server's plain 404, as a registry behind a wrong path prefix.

With ``TRAITSTREAM_TEST_SCHEMA_REGISTRY`` set to a real registry's URL (and
``TRAITSTREAM_TEST_KAFKA`` to its broker), the same pipeline tests run against it;
only the tests that need a registry to fail on purpose are skipped. deploy/README.md
says how the compose file's registry is checked that way.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from fastavro import parse_schema, schemaless_writer

from tests.support.changes import wait_outbox_empty
from tests.support.stack import Broker, Stack, free_port, wait_until
from traitstream.avro import codec
from traitstream.avro.changes import LOCAL_CHANGE_SCHEMA_ID, load_change_v1_text
from traitstream.avro.changes import decode as decode_change
from traitstream.avro.schemas import LOCAL_SCHEMA_ID, RegistrySchemas, load_v1_r1_text, load_v1_text
from traitstream.errors import InvalidRecord, TraitstreamError, TransientError
from traitstream.events import IdentifyEvent, Op, Operation, partition_key, user_profile_id
from traitstream.worker.dlq import REASON

EXTERNAL = os.environ.get("TRAITSTREAM_TEST_SCHEMA_REGISTRY", "").rstrip("/")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_BODIES = {CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json"}


class ConfluentShapedRegistry:
    """A schema registry on a free local port, in a background thread."""

    def __init__(self) -> None:
        self.subjects: dict[str, list[int]] = {}
        self.schemas: dict[int, tuple[str, str]] = {}  # id -> (schema type, text)
        self.requests: list[tuple[str, str, str]] = []  # method, path, content type
        self.fetch_failure: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="registry", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConfluentShapedRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def register(self, subject: str, text: str, schema_type: str = "AVRO") -> int:
        canonical = self._canon(schema_type, text)
        with self._lock:
            existing = next(
                (
                    i
                    for i, (t, s) in self.schemas.items()
                    if t == schema_type and self._canon(t, s) == canonical
                ),
                None,
            )
            schema_id = existing if existing is not None else len(self.schemas) + 1
            self.schemas[schema_id] = (schema_type, text)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    @staticmethod
    def _canon(schema_type: str, text: str) -> str:
        return json.dumps(json.loads(text), sort_keys=True) if schema_type == "AVRO" else text

    @contextlib.contextmanager
    def failing(self, status: int, body: bytes) -> Iterator[None]:
        """Answer every schema fetch with ``status`` and ``body`` for a while."""
        self.fetch_failure = (status, body)
        try:
            yield
        finally:
            self.fetch_failure = None

    def seen(self, method: str, path: str) -> list[tuple[str, str, str]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and r[1] == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def record(self) -> None:
                with registry._lock:
                    registry.requests.append((self.command, self.path, self.headers.get("Content-Type", "")))

            def do_POST(self) -> None:
                self.record()
                parts = self.path.split("/")
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if len(parts) != 4 or parts[1] != "subjects" or parts[3] != "versions":
                    self.answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                    return
                if self.headers.get("Content-Type", "").split(";")[0] not in ACCEPTED_BODIES:
                    self.answer(415, {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"})
                    return
                body = json.loads(raw)
                schema_type = body.get("schemaType", "AVRO")
                try:
                    if schema_type == "AVRO":
                        parse_schema(json.loads(body["schema"]))
                except Exception:
                    self.answer(422, {"error_code": 42201, "message": "Invalid schema"})
                    return
                self.answer(200, {"id": registry.register(parts[2], body["schema"], schema_type)})

            def do_GET(self) -> None:
                self.record()
                parts = self.path.split("/")
                if len(parts) != 4 or parts[1:3] != ["schemas", "ids"] or not parts[3].isdigit():
                    self.answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                    return
                if registry.fetch_failure is not None:
                    status, data = registry.fetch_failure
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                found = registry.schemas.get(int(parts[3]))
                if found is None:
                    self.answer(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                schema_type, text = found
                self.answer(
                    200, {"schema": text} | ({} if schema_type == "AVRO" else {"schemaType": schema_type})
                )

        return Handler


def evolved_schema(field: str) -> str:
    """v1 plus one optional field, as another producer's newer schema would be."""
    schema = json.loads(load_v1_text())
    schema["fields"].append({"name": field, "type": ["null", "string"], "default": None})
    return json.dumps(schema)


def wire(schema_id: int, writer_text: str, record: dict[str, Any]) -> bytes:
    """The Confluent wire format, written here rather than by traitstream's codec."""
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(json.loads(writer_text)), record)
    return out.getvalue()


def event_for(stack: Stack, user: str, plan: str) -> IdentifyEvent:
    now = int(time.time() * 1000)
    return IdentifyEvent(
        workspace_id=stack.workspace,
        user_id=user,
        dialect="billing-service",
        event_time_ms=now,
        received_time_ms=now,
        response_id=str(uuid.uuid4()),
        operations=(Operation(Op.SET, "plan", plan),),
    )


def produce(stack: Stack, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
    producer.produce(stack.topic, key=key, value=value)
    assert producer.flush(15) == 0, "the broker did not take the record"


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 15) -> list[Any]:
    """Every record of a topic, read from the beginning without joining a group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    records: list[Any] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(at_end) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is None:
                records.append(message)
            elif message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(int(message.partition()))
    finally:
        consumer.close()
    assert len(at_end) == partitions, f"did not reach the end of {topic} within {timeout:.0f}s"
    return records


def registry_errors(stack: Stack) -> float:
    """Registry failures the workers retried (``TransientError`` from the registry)."""
    return stack.workers_metric("traitstream_worker_store_errors_total", 'store="schema_registry"')


class RegistryApi:
    """The test's own view of a registry, through the same two public endpoints, so the
    pipeline tests hold for the in-test server and for a real registry alike."""

    def __init__(self, url: str) -> None:
        self.url = url

    def register(self, subject: str, text: str, schema_type: str = "AVRO") -> int:
        body: dict[str, str] = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        response = httpx.post(
            f"{self.url}/subjects/{subject}/versions",
            json=body,
            headers={"Content-Type": CONTENT_TYPE},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    def fetch(self, schema_id: int) -> httpx.Response:
        return httpx.get(f"{self.url}/schemas/ids/{schema_id}", timeout=10)


@pytest.fixture(scope="module")
def fake_or_none() -> Iterator[ConfluentShapedRegistry | None]:
    if EXTERNAL:
        yield None
        return
    running = ConfluentShapedRegistry().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def registry(fake_or_none: ConfluentShapedRegistry | None) -> RegistryApi:
    api = RegistryApi(EXTERNAL if fake_or_none is None else fake_or_none.url)
    # Other subjects first, so traitstream's id cannot be mistaken for the bundled one.
    for name in ("Order", "Payment"):
        record = {"type": "record", "name": name, "namespace": "traitstream.test", "fields": []}
        api.register(f"traitstream-test-{name.lower()}-value", json.dumps(record))
    return api


@pytest.fixture
def fake(fake_or_none: ConfluentShapedRegistry | None) -> ConfluentShapedRegistry:
    """The in-test server, for what only it can do: fail on purpose, show its request log."""
    if fake_or_none is None:
        pytest.skip("needs the in-test registry (TRAITSTREAM_TEST_SCHEMA_REGISTRY names a real one)")
    return fake_or_none


@pytest.fixture(scope="module")
def registry_stack(kafka: Broker, database_url: str, registry: RegistryApi) -> Iterator[Stack]:
    running = Stack(
        kafka.bootstrap, database_url, extra_env={"TRAITSTREAM_SCHEMA_REGISTRY_URL": registry.url}
    )
    try:
        running.start(workers=2)
        yield running
    finally:
        running.stop()


def subject(stack: Stack) -> str:
    return f"{stack.topic}-value"


# ---------------------------------------------------------------- the pipeline


def test_the_edge_registers_the_topic_value_subject(
    registry_stack: Stack, registry: RegistryApi, fake_or_none: ConfluentShapedRegistry | None
) -> None:
    # Registering an identical schema answers the id the subject already has: the edge
    # registered the first revision, which identifies are written in.
    schema_id = registry.register(subject(registry_stack), load_v1_r1_text())
    assert schema_id != LOCAL_SCHEMA_ID
    fetched = registry.fetch(schema_id)
    assert fetched.status_code == 200
    assert json.loads(fetched.json()["schema"]) == json.loads(load_v1_r1_text())
    if fake_or_none is not None:
        posts = fake_or_none.seen("POST", f"/subjects/{subject(registry_stack)}/versions")
        assert len(posts) >= 2  # the edge's (and the workers') and this test's
        assert {content_type for _, _, content_type in posts} == {CONTENT_TYPE}
        assert fake_or_none.subjects[subject(registry_stack)] == [schema_id]


def test_records_carry_the_registry_id_and_the_profile_lands(
    registry_stack: Stack, registry: RegistryApi
) -> None:
    stack = registry_stack
    user = f"sr-{uuid.uuid4().hex[:8]}"
    response = stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro", "seats": 3}})
    assert response.status_code == 200, response.text
    profile = stack.wait_profile(user, timeout=30)
    assert profile["traits"] == {"plan": "pro", "seats": 3}

    schema_id = registry.register(subject(stack), load_v1_r1_text())
    key = partition_key(stack.workspace, user, ())
    [record] = [r for r in read_all(stack.bootstrap, stack.topic, stack.partitions) if r.key() == key]
    value = record.value()
    assert value[0] == 0
    assert struct.unpack(">I", value[1:5])[0] == schema_id
    reader = RegistrySchemas(registry.url, subject(stack))
    try:
        event = codec.decode(value, reader)
    finally:
        reader.close()
    assert event.user_id == user
    assert event.response_id == response.json()["response_id"]


def test_an_alias_is_written_in_the_current_revision_and_merges(
    registry_stack: Stack, registry: RegistryApi
) -> None:
    stack = registry_stack
    old, new = f"sr-old-{uuid.uuid4().hex[:8]}", f"sr-new-{uuid.uuid4().hex[:8]}"
    assert stack.post("/v1/identify", {"userId": old, "traits": {"plan": "free"}}).status_code == 200
    stack.wait_profile(old, timeout=30)
    assert stack.post("/v1/alias", {"previousId": old, "userId": new}).status_code == 200
    assert stack.wait_profile(new, lambda p: p["traits"] == {"plan": "free"}, timeout=30)["user_id"] == new
    current_id = registry.register(subject(stack), load_v1_text())
    key = partition_key(stack.workspace, new, ())
    [record] = [r for r in read_all(stack.bootstrap, stack.topic, stack.partitions) if r.key() == key]
    assert (
        struct.unpack(">I", record.value()[1:5])[0]
        == current_id
        != registry.register(subject(stack), load_v1_r1_text())
    )


def test_workers_fetch_a_newer_writer_schema_by_id(
    registry_stack: Stack, registry: RegistryApi, fake_or_none: ConfluentShapedRegistry | None
) -> None:
    """Another service registers an evolved (backward-compatible) schema and publishes
    with it: the workers have never seen its id, fetch it, and resolve it against v1."""
    stack = registry_stack
    text = evolved_schema("producer")
    v2_id = registry.register(subject(stack), text)
    assert v2_id != registry.register(subject(stack), load_v1_text())
    user = f"sr2-{uuid.uuid4().hex[:8]}"
    event = event_for(stack, user, "team")
    produce(stack, event.partition_key, wire(v2_id, text, codec.to_record(event) | {"producer": "billing"}))

    profile = stack.wait_profile(user, timeout=30)
    assert profile["traits"] == {"plan": "team"}
    if fake_or_none is not None:
        assert fake_or_none.seen("GET", f"/schemas/ids/{v2_id}")


def test_an_id_the_registry_does_not_know_is_dead_lettered(
    registry_stack: Stack, registry: RegistryApi
) -> None:
    stack = registry_stack
    unknown = 2_000_000_000
    assert registry.fetch(unknown).json().get("error_code") == 40403
    user = f"sr3-{uuid.uuid4().hex[:8]}"
    event = event_for(stack, user, "free")
    produce(stack, event.partition_key, wire(unknown, load_v1_text(), codec.to_record(event)))

    def dead_letter() -> Any:
        letters = read_all(stack.bootstrap, f"{stack.topic}.dlq", 1)
        return next((m for m in letters if m.key() == event.partition_key), None)

    letter = wait_until(dead_letter, 30, "the record in the dead-letter topic", every=0.5)
    assert dict(letter.headers())[REASON] == b"unknown_schema_id"
    assert stack.profile(user) is None


def test_a_registry_outage_delays_records_but_never_dead_letters_them(
    registry_stack: Stack, registry: RegistryApi, fake: ConfluentShapedRegistry
) -> None:
    stack = registry_stack
    text = evolved_schema("region")
    v3_id = registry.register(subject(stack), text)
    user = f"sr4-{uuid.uuid4().hex[:8]}"
    event = event_for(stack, user, "enterprise")
    errors_before = registry_errors(stack)
    with fake.failing(500, b'{"error_code": 50001, "message": "Error in the backend data store"}'):
        produce(stack, event.partition_key, wire(v3_id, text, codec.to_record(event) | {"region": "eu"}))
        wait_until(lambda: registry_errors(stack) > errors_before, 30, "a worker to retry the registry")
        assert stack.profile(user) is None
    profile = stack.wait_profile(user, timeout=30)
    assert profile["traits"] == {"plan": "enterprise"}
    dead = read_all(stack.bootstrap, f"{stack.topic}.dlq", 1)
    assert all(m.key() != event.partition_key for m in dead)


# ---------------------------------------------------------------- the client alone


def test_registration_is_idempotent(registry: RegistryApi) -> None:
    first = RegistrySchemas(registry.url, "traitstream-test-client-value")
    again = RegistrySchemas(registry.url, "traitstream-test-client-value")
    try:
        assert (
            first.writer_id
            == again.writer_id
            == registry.register("traitstream-test-client-value", load_v1_r1_text())
        )
        assert (
            first.alias_writer_id
            == again.alias_writer_id
            == registry.register("traitstream-test-client-value", load_v1_text())
        )
    finally:
        first.close()
        again.close()


def test_readers_never_register(registry: RegistryApi, fake_or_none: ConfluentShapedRegistry | None) -> None:
    """Only writers register: a worker runs with read-only registry credentials and
    starts while the registry is down."""
    if fake_or_none is None:
        pytest.skip("needs the in-test registry to see every request")
    reader = RegistrySchemas(registry.url, "traitstream-test-reader-value")
    try:
        known = registry.register("traitstream-test-other-value", load_v1_text())
        reader.writer_schema(known)
    finally:
        reader.close()
    assert fake_or_none.seen("POST", "/subjects/traitstream-test-reader-value/versions") == []


def test_unknown_and_non_avro_ids_make_the_record_invalid(registry: RegistryApi) -> None:
    proto_id = registry.register(
        "traitstream-test-proto-value", 'syntax = "proto3";\nmessage M {}\n', "PROTOBUF"
    )
    source = RegistrySchemas(registry.url, "traitstream-test-client-value")
    try:
        with pytest.raises(InvalidRecord) as caught:
            source.writer_schema(proto_id)
        assert caught.value.reason == "not_avro"
        with pytest.raises(InvalidRecord) as caught:
            source.writer_schema(2_000_000_001)
        assert caught.value.reason == "unknown_schema_id"
    finally:
        source.close()


def test_answers_that_say_nothing_about_the_record_are_transient(
    registry: RegistryApi, fake: ConfluentShapedRegistry
) -> None:
    """A proxy's plain 404, a 5xx, or a body that is not the registry's JSON must make
    the worker wait and retry; dead-lettering on them would drop good records."""
    source = RegistrySchemas(registry.url, "traitstream-test-client-value")
    unknown = 123_456
    try:
        for status, body in [
            (404, b"<html>404 Not Found</html>"),
            (404, b'{"error_code": 404, "message": "HTTP 404 Not Found"}'),
            (503, b'{"error_code": 50003, "message": "Error while forwarding the request"}'),
            (200, b"<html>login</html>"),
        ]:
            with fake.failing(status, body), pytest.raises(TransientError) as caught:
                source.writer_schema(unknown)
            assert caught.value.source == "schema_registry"
        with pytest.raises(InvalidRecord):
            source.writer_schema(unknown)
    finally:
        source.close()


def test_a_registry_at_a_wrong_path_refuses_to_start(registry: RegistryApi) -> None:
    source = RegistrySchemas(f"{registry.url}/no-registry-here", "traitstream-test-client-value")
    with pytest.raises(TraitstreamError) as caught:
        _ = source.writer_id
    assert not isinstance(caught.value, TransientError)
    assert "404" in str(caught.value)


def test_an_unreachable_registry_is_transient() -> None:
    source = RegistrySchemas(f"http://127.0.0.1:{free_port()}", "traitstream-test-client-value", timeout=2)
    with pytest.raises(TransientError) as caught:
        _ = source.writer_id
    assert caught.value.source == "schema_registry"


def test_profile_changes_carry_the_registry_id_of_their_own_subject(
    registry_stack: Stack, registry: RegistryApi
) -> None:
    stack = registry_stack
    user = f"sr-changes-{uuid.uuid4().hex[:8]}"
    assert stack.post("/api/identify", {"user_id": user, "traits": {"plan": "pro"}}).status_code == 200
    stack.wait_profile(user, timeout=30)
    wait_outbox_empty(stack)

    changes_subject = f"{stack.changes_topic}-value"
    schema_id = registry.register(changes_subject, load_change_v1_text())
    assert schema_id not in (LOCAL_CHANGE_SCHEMA_ID, registry.register(subject(stack), load_v1_r1_text()))
    key = f"{stack.workspace}:{user_profile_id(stack.workspace, user)}".encode()
    [record] = [r for r in read_all(stack.bootstrap, stack.changes_topic, stack.partitions) if r.key() == key]
    value = record.value()
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == schema_id
    reader = RegistrySchemas(registry.url, changes_subject, schema_text=load_change_v1_text)
    try:
        change = decode_change(value, reader)
    finally:
        reader.close()
    assert change["user_id"] == user and change["version"] == 1
    assert [(c["trait"], c["new_json"]) for c in change["changes"]] == [("plan", '"pro"')]
