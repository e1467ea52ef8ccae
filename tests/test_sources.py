"""
Every UDP service of C{twistd -n udpsuite}, in memory: none answers, admits or even tries to
send to a source forged to its subnet's directed broadcast, and none of their sockets may
broadcast (the responder's announces have a socket of their own).  The same, with real
processes and raw sockets in a network namespace, is in C{test_hostile}.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.helpers import useHostBroadcasts
from twisted_udpsuite import tap
from twisted_udpsuite.discovery.protocol import newInstance
from twisted_udpsuite.discovery.wire import Kind, Message
from twisted_udpsuite.testing import MemoryNetwork, MemoryUDPPort
from twisted_udpsuite.tftp.client import get

FORGED = [("192.0.2.255", 40001), ("192.0.2.0", 40001)]
PAYLOADS = {
    7007: b"ping",
    9999: b"JOIN forged\n",
    9998: Message(Kind.PROBE, newInstance(), 1, maxDelay=0.0, padTo=256).toBytes(),
    6969: b"\x00\x01hello.txt\x00octet\x00",
}


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Where every in-memory socket sent, even what the network would refuse (EACCES)."""
    sent: list[object] = []
    for name in ("write", "writeFrom"):
        original = getattr(MemoryUDPPort, name)

        def recording(self, packet, addr=None, *rest, _original=original):  # type: ignore[no-untyped-def]
            sent.append(addr)
            return _original(self, packet, addr, *rest)

        monkeypatch.setattr(MemoryUDPPort, name, recording)
    return sent


def test_noServiceAnswersALocalBroadcastSource(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tried: list[object]
) -> None:
    """Forged requests to every UDP service: nothing is sent, nobody may broadcast."""
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.1/24")
    useHostBroadcasts(monkeypatch, host)
    options = tap.Options()
    options.parseOptions(["--interface", ""])
    for _, sub in options.selected:
        if "root" in sub:
            sub["root"] = type(sub["root"])(str(tmp_path))
    top = tap.makeService(options, host)
    top.startService()
    ports = {p.port: p for p in host.sockets}
    assert set(PAYLOADS) <= set(ports)
    assert not any(p.getBroadcastAllowed() for p in host.sockets)
    for number, payload in PAYLOADS.items():
        for source in FORGED:
            ports[number].protocol.datagramReceived(payload, source)
    net.advance(10)
    assert tried == [] and net.datagrams == []
    top.stopService()
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


def test_tftpClientAnswersNoForgedStray(
    monkeypatch: pytest.MonkeyPatch, tried: list[object]
) -> None:
    """
    The TFTP client answers a stray packet with ERROR 5 (RFC 1350), but not one from its
    subnet's broadcast address: that ERROR would go to the whole LAN.
    """
    net = MemoryNetwork(seed=1)
    client = net.addHost("192.0.2.2/24")
    useHostBroadcasts(monkeypatch, client)
    d = get(client, ("192.0.2.1", 69), "f", io.BytesIO(), retries=0)
    [port] = client.sockets
    del tried[:]  # the request
    for source in (("192.0.2.255", 5000), ("192.0.2.0", 5000)):
        port.protocol.datagramReceived(b"\x00\x03\x00\x01hi", source)
    assert tried == []
    port.protocol.datagramReceived(b"\x00\x03\x00\x01hi", ("192.0.2.9", 5000))
    assert tried == [("192.0.2.9", 5000)]
    d.cancel()
    d.addErrback(lambda f: None)
    net.advance(60)
    assert net.clock.getDelayedCalls() == []
