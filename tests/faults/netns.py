"""A Kafka cluster whose nodes can be cut off from the network, one at a time.

``LocalKafka`` puts every node on 127.0.0.1, where nothing can separate them. Here
each node lives in a network namespace of its own, joined by a veth pair to a bridge
in this namespace, and listens on its own address there; the edge, the workers and
the test reach the nodes through the bridge. Taking a node's veth down cuts it off
from the other nodes and from every client at once, with its process running and its
sockets open, as a pulled cable or a dead switch port does; setting it up again
reconnects it.

The addresses come from 198.18.0.0/15, the range set aside for test networks
(RFC 2544), in a /24 that no route of this machine uses; nothing here routes beyond
it. Creating namespaces and links takes root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import shutil
import subprocess
import uuid
from typing import Any

from traitstream.localkafka import LocalKafka


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def usable() -> str | None:
    """Why this machine cannot build the network, or None when it can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"ts-probe-{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"network namespaces cannot be created here (root is needed): {exc.stderr.strip()}"
    ip("netns", "del", probe)
    return None


class Network:
    """A bridge and ``size`` namespaces, node ``i`` at ``<subnet>.<10 + i>``."""

    def __init__(self, size: int) -> None:
        tag = uuid.uuid4().hex[:5]  # interface names have at most 15 characters
        self.bridge = f"tsbr{tag}"
        self.namespaces = [f"ts-{tag}-{i}" for i in range(1, size + 1)]
        self._veths = [f"tsv{tag}n{i}" for i in range(1, size + 1)]
        self.subnet = _unused_subnet()

    def host(self, node_id: int) -> str:
        return f"{self.subnet}.{10 + node_id}"

    def namespace(self, node_id: int) -> str:
        return self.namespaces[node_id - 1]

    def create(self) -> Network:
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for node_id, (namespace, veth) in enumerate(zip(self.namespaces, self._veths, strict=True), 1):
                ip("netns", "add", namespace)
                ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
                ip("link", "set", veth, "master", self.bridge, "up")
                ip("-n", namespace, "addr", "add", f"{self.host(node_id)}/24", "dev", "eth0")
                ip("-n", namespace, "link", "set", "eth0", "up")
                ip("-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def cut(self, node_id: int) -> None:
        """Take the node's link down: from now on its packets go nowhere."""
        ip("link", "set", self._veths[node_id - 1], "down")

    def reconnect(self, node_id: int) -> None:
        ip("link", "set", self._veths[node_id - 1], "up")

    def reconnect_all(self) -> None:
        """Every link up: before the nodes stop, so that their connections close
        rather than linger, retransmitting into a cut link (and keeping their
        namespace alive in the kernel)."""
        for node_id in range(1, len(self._veths) + 1):
            with contextlib.suppress(subprocess.CalledProcessError):
                self.reconnect(node_id)

    def delete(self) -> None:
        """Remove every link and namespace (after the nodes have stopped). Deleting
        a veth's end here removes its peer at once, even from a namespace that the
        kernel has not finished tearing down."""
        for veth, namespace in zip(self._veths, self.namespaces, strict=True):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", veth)
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.bridge)


def _unused_subnet() -> str:
    """A /24 of 198.18.0.0/16 that overlaps no route of this machine (other tests'
    networks included), as ``198.18.<n>``."""
    shown = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    routes = []
    for line in shown.splitlines():
        words = line.split()
        destination = words[1] if words[0] in ("local", "broadcast") else words[0]
        with contextlib.suppress(ValueError):  # "default" and the like
            routes.append(ipaddress.ip_network(destination, strict=False))
    free = [
        n
        for n in range(256)
        if not any(route.overlaps(ipaddress.ip_network(f"198.18.{n}.0/24")) for route in routes)
    ]
    assert free, "every /24 of 198.18.0.0/16 is in use"
    return f"198.18.{random.choice(free)}"


class PartitionableKafka(LocalKafka):
    """``LocalKafka`` with each node in its namespace of ``network``, listening on
    its own address there."""

    def __init__(self, size: int, network: Network, **options: Any) -> None:
        super().__init__(
            size,
            hosts=[network.host(i) for i in range(1, size + 1)],
            # ``ip netns exec`` execs the command, so the process is java itself:
            # signals reach it, and it dies with its parent.
            launchers=[("ip", "netns", "exec", namespace) for namespace in network.namespaces],
            **options,
        )
        self.network = network
