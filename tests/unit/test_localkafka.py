"""The local Apache Kafka's artifacts check and its brokers' settings (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from traitstream.localkafka import artifacts
from traitstream.localkafka.cluster import broker_config


def test_the_pinned_listing_names_the_broker_and_its_logging() -> None:
    jars = artifacts.expected_jars()
    assert f"kafka_2.13-{artifacts.KAFKA_VERSION}.jar" in jars
    assert f"kafka-clients-{artifacts.KAFKA_VERSION}.jar" in jars
    assert f"log4j-slf4j-impl-{artifacts.LOG4J_VERSION}.jar" in jars
    assert all(len(digest) == 64 for digest in jars.values())


def test_a_folder_is_accepted_only_with_every_jar_intact(tmp_path: Path) -> None:
    good, bad = b"one", b"two"
    expected = {"a.jar": hashlib.sha256(good).hexdigest(), "b.jar": hashlib.sha256(bad).hexdigest()}
    (tmp_path / "a.jar").write_bytes(good)
    assert artifacts.mismatches(tmp_path, expected) == ["missing b.jar"]
    (tmp_path / "b.jar").write_bytes(b"tampered")
    (tmp_path / "c.jar").write_bytes(b"stray")
    assert artifacts.mismatches(tmp_path, expected) == ["unexpected c.jar", "checksum mismatch for b.jar"]
    (tmp_path / "b.jar").write_bytes(bad)
    (tmp_path / "c.jar").unlink()
    assert artifacts.mismatches(tmp_path, expected) == []


def test_without_maven_a_missing_cache_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts.shutil, "which", lambda _name: None)
    with pytest.raises(artifacts.KafkaUnavailable, match=r"needs Maven \(mvn\).*TRAITSTREAM_KAFKA_BOOTSTRAP"):
        artifacts.ensure_jars(tmp_path)
    assert not (tmp_path / f"kafka-{artifacts.KAFKA_VERSION}" / "libs").exists()


def test_a_damaged_cache_is_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    libs = tmp_path / f"kafka-{artifacts.KAFKA_VERSION}" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{artifacts.KAFKA_VERSION}.jar").write_bytes(b"truncated")
    monkeypatch.setattr(artifacts.shutil, "which", lambda _name: None)
    with pytest.raises(artifacts.KafkaUnavailable):
        artifacts.ensure_jars(tmp_path)
    assert not libs.exists()


def test_a_failing_fetch_names_the_failure_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text("#!/bin/sh\necho 'Could not transfer artifact: network unreachable' >&2\nexit 1\n")
    fake_mvn.chmod(0o755)
    monkeypatch.setattr(artifacts.shutil, "which", lambda _name: str(fake_mvn))
    cache = tmp_path / "cache"
    with pytest.raises(artifacts.KafkaUnavailable, match=r"failed.*network unreachable"):
        artifacts.ensure_jars(cache)
    root = cache / f"kafka-{artifacts.KAFKA_VERSION}"
    assert list(root.iterdir()) == []


def test_a_fetch_with_altered_jars_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mvn = tmp_path / "mvn"
    # Writes one wrong jar where copy-dependencies would write them all.
    fake_mvn.write_text(
        '#!/bin/sh\nfor a; do case "$a" in -DoutputDirectory=*) d="${a#*=}";; esac; done\n'
        f'mkdir -p "$d" && echo evil > "$d/kafka_2.13-{artifacts.KAFKA_VERSION}.jar"\n'
    )
    fake_mvn.chmod(0o755)
    monkeypatch.setattr(artifacts.shutil, "which", lambda _name: str(fake_mvn))
    cache = tmp_path / "cache"
    with pytest.raises(artifacts.KafkaUnavailable, match="do not match the pinned checksums"):
        artifacts.ensure_jars(cache)
    assert list((cache / f"kafka-{artifacts.KAFKA_VERSION}").iterdir()) == []


@pytest.mark.parametrize(
    ("shown", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "25" 2025', 25),
        ("nonsense", None),
    ],
)
def test_java_versions_are_read_as_their_major(shown: str, major: int | None) -> None:
    assert artifacts.java_major(shown) == major


def test_replication_follows_the_cluster_size() -> None:
    one, three = broker_config(1), broker_config(3)
    assert (one["default.replication.factor"], one["min.insync.replicas"]) == ("1", "1")
    assert (three["default.replication.factor"], three["min.insync.replicas"]) == ("3", "2")
    assert three["offsets.topic.replication.factor"] == "3"
    assert three["transaction.state.log.min.isr"] == "2"
