"""
Stopping without cutting transfers (issue #11 §4), in memory with a clock: the TFTP
server's and the file server's C{drain}, and the multi-service that drains before it stops.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.filepath import FilePath

from tests.helpers import assertNoResult, successResultOf
from tests.tftp.test_server import SERVER
from tests.tftp.test_server import _Raw as Peer  # a scripted client
from twisted_udpsuite.drain import DrainingMultiService
from twisted_udpsuite.files.server import FileServerFactory
from twisted_udpsuite.testing import MemoryNetwork
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.wire import Ack, Data, Error, ReadRequest


class World:
    def __init__(self, root: FilePath) -> None:
        self.net = MemoryNetwork()
        self.serverHost = self.net.addHost("192.0.2.1/24")
        self.clientHost = self.net.addHost("192.0.2.2/24")
        self.data = os.urandom(3 * 512 + 100)  # four blocks
        root.child("f").setContent(self.data)
        self.protocol = TFTPServerProtocol(
            FilesystemBackend(root), ServerPolicy(rate=None), reactor=self.serverHost
        )
        self.port = self.serverHost.listenUDP(69, self.protocol, maxPacketSize=65536)

    def peer(self) -> Peer:
        peer = Peer()
        self.clientHost.listenUDP(0, peer)
        return peer

    def startDownload(self) -> Peer:
        """A download that got DATA 1 and is waiting for our ACK."""
        peer = self.peer()
        peer.send(ReadRequest(b"f", "octet"))
        self.net.advance(0.001)
        assert peer.received[-1][0] == Data(1, self.data[:512])
        return peer

    def stall(self) -> Peer:
        """A download that answered once (so the server keeps resending), then fell silent."""
        peer = self.startDownload()
        peer.send(Ack(1), peer.received[-1][1])
        self.net.advance(0.001)
        assert peer.received[-1][0] == Data(2, self.data[512:1024])
        return peer

    def finish(self, peer: Peer) -> None:
        """ACK every block until the last one."""
        tid = peer.received[-1][1]
        for block in range(1, 5):
            peer.send(Ack(block), tid)
            self.net.advance(0.001)

    def end(self) -> None:
        self.port.stopListening()
        self.net.advance(400)
        assert self.net.clock.getDelayedCalls() == []


def transferEvents(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("tftpTransfer")]


def test_tftpDrainLetsRunningTransferFinish(tmp_path: Any) -> None:
    """
    While draining, a running download goes on and completes, a new request gets ERROR
    "Server is stopping" (logged with C{tftpRefused}), and the drain fires as soon as
    the last running transfer is over, before its time runs out.
    """
    world = World(FilePath(str(tmp_path)))
    running = world.startDownload()
    with capturedLogs() as events:
        drained = world.protocol.drain(10)
        assertNoResult(drained)
        late = world.peer()
        late.send(ReadRequest(b"f", "octet"))
        world.net.advance(0.001)
        assert late.received == [(Error(0, "Server is stopping"), SERVER)]
        world.net.advance(1)
        world.finish(running)
        successResultOf(drained)
    [refusal] = [e for e in events if "tftpRefused" in e]
    assert refusal["tftpRefused"] == "stopping"
    [done] = transferEvents(events)
    assert done["outcome"] in ("ok", "completed")
    assert done["bytes"] == len(world.data)
    world.end()


def test_tftpDrainCutsAtDeadline(tmp_path: Any) -> None:
    """
    A download still running when the drain time is over is aborted with an ERROR to
    its client and logged with the outcome C{cut}; then the drain fires.
    """
    world = World(FilePath(str(tmp_path)))
    stalled = world.stall()
    with capturedLogs() as events:
        drained = world.protocol.drain(5)
        world.net.advance(4.9)
        assertNoResult(drained)
        world.net.advance(0.2)
        successResultOf(drained)
    assert stalled.received[-1][0] == Error(0, "Server is stopping")
    [cut] = transferEvents(events)
    assert cut["outcome"] == "cut"
    assert cut["reason"] == "Server is stopping"
    assert world.protocol.sessions == {}
    world.end()


def test_tftpDrainIdle(tmp_path: Any) -> None:
    """With nothing running the drain fires at once and leaves no timer behind."""
    world = World(FilePath(str(tmp_path)))
    successResultOf(world.protocol.drain(10))
    successResultOf(world.protocol.drain(10))  # asking twice is harmless
    assert world.net.clock.getDelayedCalls() == []
    world.end()


# The file server


class Files:
    def __init__(self, root: FilePath) -> None:
        self.clock = Clock()
        self.data = os.urandom(200_000)
        root.child("big").setContent(self.data)
        # A small turn delay: the body goes out in steps the test can stop between.
        self.factory = FileServerFactory(root, self.clock, turnDelay=0.01, sendfile=False)

    def connect(self, port: int) -> tuple[Any, StringTransport]:
        address = IPv4Address("TCP", "192.0.2.2", port)
        proto = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        return proto, transport


def test_filesDrain(tmp_path: Any) -> None:
    """
    Draining the file server: an idle connection gets 503 "server stopping" and is
    closed at once; a body being sent is finished, then its connection is closed the
    same way; a new connection is refused; the drain fires when all are gone.
    """
    files = Files(FilePath(str(tmp_path)))
    idle, idleTransport = files.connect(5001)
    busy, busyTransport = files.connect(5002)
    busy.dataReceived(b"FETCH 0 - big\n")
    files.clock.advance(0.01)
    drained = files.factory.drain(10)
    assert idleTransport.disconnecting
    assert b"503" in idleTransport.value()
    idle.connectionLost(None)
    assertNoResult(drained)
    refused, refusedTransport = files.connect(5003)
    assert b"503 server stopping" in refusedTransport.value()
    assert files.factory.counts.refused["stopping"] == 1
    for _ in range(200):
        if busyTransport.disconnecting:
            break
        files.clock.advance(0.01)
    assert busyTransport.disconnecting
    assert len(busyTransport.value()) > len(files.data)
    assert files.factory.counts.requests[200, "ok"] == 1
    busy.connectionLost(None)
    successResultOf(drained)
    assert files.clock.getDelayedCalls() == []


def test_filesDrainCutsAtDeadline(tmp_path: Any) -> None:
    """A body that is not done when the drain time is over is cut (and logged so)."""
    files = Files(FilePath(str(tmp_path)))
    proto, transport = files.connect(5001)
    proto.dataReceived(b"FETCH 0 - big\n")
    transport.producer.pauseProducing()  # the client stopped reading
    with capturedLogs() as events:
        drained = files.factory.drain(3)
        files.clock.advance(3)
        assert transport.disconnected or transport.disconnecting
        proto.connectionLost(None)
        successResultOf(drained)
    [request] = [e for e in events if e.get("filesRequest")]
    assert (request["outcome"], request["service"], request["file"]) == ("cut", "files", "big")
    assert files.factory.counts.requests[200, "cut"] == 1
    files.clock.advance(100)
    assert files.clock.getDelayedCalls() == []


# The service that drains before it stops


class _Drainable(Service):
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.draining: Deferred[None] = Deferred()

    def drain(self, timeout: float) -> Deferred[None]:
        self.log.append(f"drain {timeout}")
        return self.draining

    def stopService(self) -> None:
        self.log.append("stop")
        super().stopService()


def test_drainingMultiServiceDrainsFirst() -> None:
    """
    Children that can be drained are drained (with the service's timeout) before any
    child stops; a child without C{drain} just stops.
    """
    log: list[str] = []
    top = DrainingMultiService()
    top.drainTimeout = 2.5
    child = _Drainable(log)
    child.setServiceParent(top)
    Service().setServiceParent(top)
    top.startService()
    stopped = top.stopService()
    assert log == ["drain 2.5"]
    assertNoResult(stopped)
    child.draining.callback(None)
    successResultOf(stopped)
    assert log == ["drain 2.5", "stop"]
    assert not child.running


@pytest.mark.parametrize("timeout", [0, 0.5])
def test_drainTimeoutZero(tmp_path: Any, timeout: float) -> None:
    """A short drain time (0: none) cuts a running download as soon as it is over."""
    world = World(FilePath(str(tmp_path)))
    world.stall()
    with capturedLogs() as events:
        drained = world.protocol.drain(timeout)
        world.net.advance(timeout + 0.001)
        successResultOf(drained)
    assert [e["outcome"] for e in transferEvents(events)] == ["cut"]
    world.end()
