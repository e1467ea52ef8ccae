"""Tests for C{udpsuite discover}, run on the in-memory network."""

from __future__ import annotations

import io
import random

from twisted.internet.defer import Deferred

from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.discovery.protocol import Responder
from twisted_udpsuite.discovery.wire import ServiceEntry
from twisted_udpsuite.testing import MemoryNetwork

PORT = 9998


def runDiscover(argv: list[str]) -> tuple[int, list[str], str, MemoryNetwork]:
    """
    C{udpsuite discover ARGV} on a host whose own responder is bound to loopback (as
    C{bash .ci/serve} binds it), with two more responders on its /24.
    """
    net = MemoryNetwork(seed=4)
    client = net.addHost("192.0.2.2/24")
    client.listenUDP(PORT, Responder("here", [ServiceEntry("echo", "udp", 7007)], client,
                                     random=random.Random(0)), "127.0.0.1")  # fmt: skip
    for i in (3, 4):
        host = net.addHost(f"192.0.2.{i}/24")
        host.listenUDP(PORT, Responder(f"lan{i}", (), host, random=random.Random(i)))
    out, err = io.StringIO(), io.StringIO()
    argv = ["discover", "--timeout", "4", *argv]
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    return status, sorted(out.getvalue().splitlines()), err.getvalue(), net


def test_findsTheLocalResponderByDefault() -> None:
    """With no options, the host's own loopback-bound responder is found with the LAN's."""
    status, lines, err, net = runDiscover([])
    assert status == 0, err
    assert lines == [
        f"127.0.0.1:{PORT}  here  echo/udp:7007",
        f"192.0.2.3:{PORT}  lan3  -",
        f"192.0.2.4:{PORT}  lan4  -",
    ]
    assert err.endswith("3 responders found\n")
    assert any(r.broadcast for r in net.datagrams)


def test_toProbesOnlyThoseHostsAndNeverBroadcasts() -> None:
    """
    --to (repeatable) probes exactly the hosts named: nothing is broadcast, the LAN's
    other responders are not asked.
    """
    status, lines, err, net = runDiscover(["--to", "127.0.0.1", "--to", "localhost"])
    assert status == 0, err
    assert lines == [f"127.0.0.1:{PORT}  here  echo/udp:7007"]
    assert not any(r.broadcast for r in net.datagrams)
    assert {r.destination for r in net.datagrams if r.destination[1] == PORT} == {
        ("127.0.0.1", PORT)
    }
    status, lines, err, net = runDiscover(["--to", "192.0.2.4"])
    assert (status, lines) == (0, [f"192.0.2.4:{PORT}  lan4  -"])
    assert not any(r.broadcast for r in net.datagrams)
