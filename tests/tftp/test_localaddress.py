"""
A TFTP server bound to a wildcard address answers from the address its client asked, on a
host with several: in memory, and in a network namespace with real sockets and the real
twistd plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath

from tests import udpprobe
from tests.process import BackgroundProcess, venvScript
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.wire import Data, ReadRequest, parsePacket


class _Client(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[Any, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((parsePacket(datagram), addr))


@pytest.mark.parametrize("interface", ["", "::"])
def test_answerFromTheAddressAsked(tmp_path: Path, interface: str) -> None:
    """
    The client reaches the server's second address through a router: the DATA comes from
    that address, not from the one the server would pick to reach the client.
    """
    (tmp_path / "f").write_bytes(b"x" * 100)
    net = MemoryNetwork()
    serverHost = net.addHost("192.0.2.1/24", "198.51.100.1/24")
    clientHost = net.addHost("203.0.113.5/24")
    protocol = TFTPServerProtocol(
        FilesystemBackend(FilePath(str(tmp_path))), ServerPolicy(rate=None), reactor=serverHost
    )
    serverHost.listenUDP(69, protocol, interface=interface, maxPacketSize=65536)
    client = _Client()
    clientHost.listenUDP(0, client)
    client.transport.write(ReadRequest(b"f", "octet").toBytes(), ("198.51.100.1", 69))
    net.advance(0.1)
    packet, source = client.received[0]
    assert isinstance(packet, Data) and packet.block == 1
    assert source[0] == "198.51.100.1"


# Real sockets: in a namespace of our own (tests/conftest.py) a wildcard server is seen
# by no one, and its loopback has several addresses.


@pytest.mark.parametrize(
    ("interface", "asked", "client"),
    [
        ("", "127.0.0.2", "127.0.0.1"),
        ("::", "127.0.0.3", "127.0.0.1"),
        ("::", "fd00::2", "::1"),
        ("::", "::1", "fd00::2"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_realWildcardServer(
    loopbackNamespace: list[str],
    reactor: Any,
    tmp_path: Path,
    interface: str,
    asked: str,
    client: str,
) -> None:
    """
    twistd on a wildcard in a namespace: a transfer's DATA and a refusal's ERROR both come
    from the address asked.
    """
    (tmp_path / "f").write_bytes(b"y" * 600)
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
    argv += ["--port", "6969", "--interface", interface, "--root", str(tmp_path)]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"tftp listening")
        for request, answer in [
            (b"\0\1f\0octet\0", b"00030001"),  # DATA 1, from the transfer's port
            (b"\0\1f\0mail\0", b"00050004"),  # ERROR 4, from the request port
        ]:
            source, reply = await udpprobe.probe(
                reactor, loopbackNamespace, asked, 6969, client, request
            )
            assert (source, reply[:4].hex().encode()) == (asked.encode(), answer)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_realWildcardWorkers(
    loopbackNamespace: list[str], reactor: Any, tmp_path: Path
) -> None:
    """With --workers, the processes that adopt the socket answer from the address asked."""
    (tmp_path / "f").write_bytes(b"z" * 600)
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
    argv += ["--port", "6969", "--interface", "", "--root", str(tmp_path), "--workers", "2"]
    argv += ["--rate", "0"]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"tftp worker 1 serving")
        for _ in range(8):
            source, _ = await udpprobe.probe(
                reactor, loopbackNamespace, "127.0.0.2", 6969, "127.0.0.1", b"\0\1f\0octet\0"
            )
            assert source == b"127.0.0.2"
    finally:
        await server.stop()
