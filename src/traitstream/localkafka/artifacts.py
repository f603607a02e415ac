"""The Apache Kafka jars a local broker runs: pinned, fetched once, verified, cached.

The version is pinned (``KAFKA_VERSION``) and so is every jar: ``kafka-<version>.sha256``
beside this module lists the SHA-256 of each. The first use resolves them from Maven
Central with Maven (``mvn dependency:copy-dependencies`` with strict checksums) into a
staging folder, checks every file against the list, and only then renames the folder
into the cache; a fetch that fails or yields anything else leaves nothing behind. Later
uses find the cache and run offline.

The cache is ``$TRAITSTREAM_CACHE_DIR`` or ``$XDG_CACHE_HOME/traitstream`` (by default
``~/.cache/traitstream``), never the checkout.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from traitstream.errors import TraitstreamError

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
"""log4j's SLF4J binding, which the kafka_2.13 artifact leaves to the distribution:
without it the broker's own log would go nowhere."""

MIN_JAVA = 17

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>traitstream.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaUnavailable(TraitstreamError):
    """A local Apache Kafka cannot be started here; the message says what to install
    or to set instead."""


_ALTERNATIVE = "or set TRAITSTREAM_KAFKA_BOOTSTRAP to a running Kafka broker"


def cache_dir() -> Path:
    explicit = os.environ.get("TRAITSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "traitstream"


def expected_jars(version: str = KAFKA_VERSION) -> dict[str, str]:
    """File name → SHA-256 of every jar of the pinned version."""
    listing = Path(__file__).with_name(f"kafka-{version}.sha256").read_text("utf-8")
    pairs = (line.split() for line in listing.splitlines() if line and not line.startswith("#"))
    return {name: digest for digest, name in pairs}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mismatches(folder: Path, expected: dict[str, str]) -> list[str]:
    """What is wrong with ``folder`` against ``expected``: each missing, extra or
    altered jar, named; empty when every jar is there and intact."""
    present = {p.name for p in folder.glob("*.jar")} if folder.is_dir() else set()
    problems = [f"missing {name}" for name in sorted(expected.keys() - present)]
    problems += [f"unexpected {name}" for name in sorted(present - expected.keys())]
    problems += [
        f"checksum mismatch for {name}"
        for name in sorted(present & expected.keys())
        if _sha256(folder / name) != expected[name]
    ]
    return problems


def ensure_jars(cache: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """The folder of the pinned version's verified jars, fetched first if need be.

    Raises ``KafkaUnavailable`` naming what failed: Maven missing, the fetch failing
    (no network, say), or a jar whose checksum differs from the pinned one."""
    expected = expected_jars(version)
    root = (cache or cache_dir()) / f"kafka-{version}"
    libs = root / "libs"
    if libs.is_dir() and not mismatches(libs, expected):
        return libs
    if libs.exists():
        shutil.rmtree(libs)  # damaged: fetch it again rather than run it
    maven = shutil.which("mvn")
    if maven is None:
        raise KafkaUnavailable(
            f"fetching Apache Kafka {version} once needs Maven (mvn): install it "
            f"(Debian: apt-get install maven) {_ALTERNATIVE}"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetch-", dir=root) as staging_name:
        staging = Path(staging_name)
        (staging / "pom.xml").write_text(_POM, "utf-8")
        fetch = subprocess.run(
            [
                maven,
                *("-B", "-q", "--strict-checksums", "-f", str(staging / "pom.xml")),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fetch.returncode != 0:
            detail = (fetch.stdout + fetch.stderr).strip().splitlines()[-5:]
            raise KafkaUnavailable(
                f"fetching Apache Kafka {version} with Maven failed (exit {fetch.returncode}): "
                + " | ".join(detail)
                + f"; check the network and Maven's settings, {_ALTERNATIVE}"
            )
        problems = mismatches(staging / "libs", expected)
        if problems:
            raise KafkaUnavailable(
                f"the fetched Apache Kafka {version} jars do not match the pinned checksums "
                f"({'; '.join(problems[:5])}); nothing was kept"
            )
        (staging / "libs").rename(libs)
    return libs


def java_command() -> str:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java`` first), checked
    to be Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaUnavailable(
            f"a local Apache Kafka needs Java {MIN_JAVA} or newer and none was found: install one "
            f"(Debian: apt-get install openjdk-17-jre-headless) {_ALTERNATIVE}"
        )
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    major = java_major(shown)
    if major is None or major < MIN_JAVA:
        raise KafkaUnavailable(
            f"a local Apache Kafka needs Java {MIN_JAVA} or newer; {java} is "
            f"{major if major is not None else 'of an unknown version'} {_ALTERNATIVE}"
        )
    return java


def java_major(version_text: str) -> int | None:
    """The major version in ``java -version``'s output (``1.8.0`` is 8, ``17.0.15`` is 17)."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major
