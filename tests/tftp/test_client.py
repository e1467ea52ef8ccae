"""
Unit tests for the TFTP client on the in-memory network, against a scripted fake server
(tests/tftp/fakeserver.py) that misbehaves on demand.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.python.filepath import FilePath

from tests.helpers import failureResultOf
from tests.tftp.fakeserver import FakeServer, Script
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.client import get, put
from twisted_udpsuite.tftp.wire import Error, parsePacket

SERVER = ("192.0.2.1", 69)


def setUp(
    files: dict[bytes, bytes] | None = None, script: Script | None = None, **faults: Any
) -> tuple[MemoryNetwork, Any, FakeServer]:
    net = MemoryNetwork(seed=faults.pop("seed", 7), **faults)
    serverHost = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    server = FakeServer(serverHost, files or {}, script)
    serverHost.listenUDP(69, server, maxPacketSize=65536)
    return net, client, server


def settle(net: MemoryNetwork) -> None:
    """Let every timer (dallies, server give-ups) run out, so leaks show."""
    net.advance(60)


def sentBy(net: MemoryNetwork, port: int | None = None) -> list[Any]:
    return [
        parsePacket(r.data)
        for r in net.datagrams
        if r.source[0] == "192.0.2.2" and (port is None or r.destination[1] == port)
    ]


def test_fileNotFound(tmp_path: Any) -> None:
    """ERROR 1 fails with FileNotFound carrying the server's text; no file is left."""
    net, client, server = setUp()
    target = tmp_path / "out"
    d = get(client, SERVER, "missing", str(target))
    with pytest.raises(errors.FileNotFound, match="File not found"):
        net.runUntil(d)
    assert os.listdir(tmp_path) == []
    settle(net)
    assert net.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "code, cls",
    [
        (2, errors.AccessViolation),
        (3, errors.DiskFull),
        (6, errors.FileExists),
        (0, errors.RemoteError),
        (42, errors.RemoteError),
    ],
)
def test_requestErrors(code: int, cls: type[errors.TFTPError]) -> None:
    net, client, server = setUp(script=Script(requestError=(code, "nope")))
    d = put(client, SERVER, b"data", "x")
    with pytest.raises(cls) as info:
        net.runUntil(d)
    assert info.value.message == "nope" and info.value.code == code


def test_silentServerTimesOut() -> None:
    """No answer: the request is sent 1 + retries times, then TransferTimeout."""
    net, client, server = setUp(script=Script(silent=True))
    d = get(client, SERVER, "f", io.BytesIO(), retries=3, timeout=2)
    with pytest.raises(errors.TransferTimeout):
        net.runUntil(d)
    assert len(server.requests) == 4
    assert net.clock.seconds() == pytest.approx(8)
    assert net.clock.getDelayedCalls() == []
    assert client.udpPorts == {}


def test_cancelDuringRequest(tmp_path: Any) -> None:
    """Cancel before any answer: port closed, timers gone, temp file removed."""
    net, client, server = setUp(script=Script(silent=True))
    d = get(client, SERVER, "f", FilePath(str(tmp_path / "out")))
    net.pump()
    assert len(os.listdir(tmp_path)) == 1  # the temporary sibling
    d.cancel()
    failureResultOf(d, CancelledError)
    assert os.listdir(tmp_path) == []
    assert client.udpPorts == {}
    assert net.clock.getDelayedCalls() == []


def test_unrequestedOptionInOACKIsRefused() -> None:
    """An OACK with an option we never asked for gets ERROR 8 and fails the transfer."""
    net, client, server = setUp({b"f": b"x"}, Script(extraOption={"bogus": "1"}))
    d = get(client, SERVER, "f", io.BytesIO(), blksize=1024)
    with pytest.raises(errors.OptionNegotiationRefused):
        net.runUntil(d)
    settle(net)
    assert [e.code for e in server.sessions[0].errors] == [8]
    assert net.clock.getDelayedCalls() == []


def test_strayFromAnotherHostGetsError5() -> None:
    """Before the TID is known, a packet from another host is answered with ERROR 5."""
    net, client, server = setUp(script=Script(silent=True))
    other = net.addHost("192.0.2.9/24")
    d = get(client, SERVER, "f", io.BytesIO(), retries=0)
    net.pump()
    clientPort = next(iter(client.udpPorts.values())).port
    strays: list[Any] = []

    class Catch:
        def makeConnection(self, transport: Any) -> None:
            self.transport = transport

        def datagramReceived(self, data: bytes, addr: Any) -> None:
            strays.append(parsePacket(data))

        def doStop(self) -> None:
            pass

    port = other.listenUDP(5000, Catch())  # type: ignore[arg-type]
    port.write(b"\x00\x03\x00\x01hi", ("192.0.2.2", clientPort))
    net.pump()
    assert strays == [Error(5, "Unknown transfer ID")]
    with pytest.raises(errors.TransferTimeout):
        net.runUntil(d)


def test_badArguments() -> None:
    net, client, server = setUp()
    with pytest.raises(ValueError):
        get(client, SERVER, "f", io.BytesIO(), mode="mail")
    with pytest.raises(ValueError):
        get(client, SERVER, "f", io.BytesIO(), blksize=4)
    with pytest.raises(TypeError):
        put(client, SERVER, 42, "f")
    assert client.udpPorts == {}
