"""
A scripted TFTP server for client tests, written independently of the real server so the
client is checked against a second reading of the RFCs, and able to misbehave on demand:
ignore or refuse options, wrap blocks to 0 or to 1, send an ERROR mid-transfer, send from a
wrong port, duplicate blocks, repeat the final DATA, or stay silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from twisted_udpsuite.tftp.wire import (
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    WriteRequest,
    encodeAck,
    encodeData,
    parsePacket,
)


@dataclass
class Script:
    """How the fake server behaves. The defaults are a correct RFC 1350/2347/7440 server."""

    options: str = "accept"  # "accept", "ignore" (plain DATA 1 / ACK 0) or "refuse" (ERROR 8)
    maxBlksize: int = 65464
    sendTsize: bool = True
    wrapTo: int = 0
    requestError: tuple[int, str] | None = None
    errorAfterBlock: int | None = None
    errorPacket: tuple[int, str] = (0, "something broke")
    silent: bool = False
    strayAtBlock: int | None = None
    duplicateData: bool = False
    repeatFinal: int = 0
    swapBlocks: tuple[int, int] | None = None
    extraOption: dict[str, str] = field(default_factory=dict)
    retries: int = 5
    timeout: float = 1.0


class FakeServer(DatagramProtocol):
    """The well-known port: each request starts a L{FakeSession} on a new port."""

    def __init__(self, reactor: Any, files: dict[bytes, bytes], script: Script | None = None):
        self.reactor = reactor
        self.files = files
        self.script = script or Script()
        self.requests: list[ReadRequest | WriteRequest] = []
        self.sessions: list[FakeSession] = []
        self.uploads: dict[bytes, bytes] = {}

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parsePacket(data)
        assert isinstance(packet, ReadRequest | WriteRequest), packet
        self.requests.append(packet)
        if self.script.silent:
            return
        session = FakeSession(self, packet, addr)
        self.sessions.append(session)
        interface = "::" if ":" in addr[0] else ""
        self.reactor.listenUDP(0, session, interface=interface, maxPacketSize=65536)


class FakeSession(DatagramProtocol):
    def __init__(self, server: FakeServer, request: Any, peer: tuple[str, int]) -> None:
        self.server = server
        self.script = server.script
        self.reactor = server.reactor
        self.request = request
        self.peer = peer
        self.blksize = 512
        self.windowsize = 1
        self.timer: Any = None
        self.tries = 0
        self.done = False
        self.strays: list[Any] = []
        self.errors: list[Error] = []
        self.received = bytearray()
        self.expected = 1  # next absolute block to receive
        self.acked = 0  # absolute block acknowledged by the client (send side)
        self.lastSent: list[bytes] = []
        self.finalSent = False

    # helpers

    def wire(self, absolute: int) -> int:
        if absolute <= 0xFFFF:
            return absolute
        span = 0x10000 if self.script.wrapTo == 0 else 0xFFFF
        return self.script.wrapTo + (absolute - 0x10000) % span

    def send(self, data: bytes) -> None:
        self.transport.write(data, self.peer)

    def arm(self, resend: list[bytes]) -> None:
        self.cancelTimer()
        self.lastSent = resend
        self.timer = self.reactor.callLater(self.script.timeout, self.expire)

    def cancelTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def expire(self) -> None:
        self.timer = None
        self.tries += 1
        if self.tries > self.script.retries:
            self.finish()
            return
        for packet in self.lastSent:
            self.send(packet)
        self.timer = self.reactor.callLater(self.script.timeout, self.expire)

    def finish(self) -> None:
        self.done = True
        self.cancelTimer()
        self.transport.stopListening()

    # start

    def startProtocol(self) -> None:
        # Not from inside startProtocol: stopping the port there upsets its port count.
        self.reactor.callLater(0, self.begin)

    def begin(self) -> None:
        script = self.script
        request = self.request
        if script.requestError is not None:
            self.send(Error(*script.requestError).toBytes())
            self.finish()
            return
        oack: dict[str, str] = {}
        if request.options and script.options == "refuse":
            self.send(Error(8, "options refused").toBytes())
            self.finish()
            return
        if request.options and script.options == "accept":
            for name, value in request.options.items():
                if name == "blksize":
                    self.blksize = min(int(value), script.maxBlksize)
                    oack[name] = str(self.blksize)
                elif name == "windowsize":
                    self.windowsize = int(value)
                    oack[name] = value
                elif name == "timeout":
                    oack[name] = value
                elif name == "tsize" and script.sendTsize:
                    if isinstance(request, ReadRequest):
                        content = self.server.files.get(request.filename)
                        if content is not None:
                            oack[name] = str(len(content))
                    else:
                        oack[name] = value
            oack.update(script.extraOption)
        if isinstance(request, ReadRequest):
            self.content = self.server.files.get(request.filename)
            if self.content is None:
                self.send(Error(1, "File not found").toBytes())
                self.finish()
                return
            if oack:
                packet = OptionAck(oack).toBytes()
                self.send(packet)
                self.arm([packet])
            else:
                self.sendWindow()
        else:
            packet = OptionAck(oack).toBytes() if oack else encodeAck(0)
            self.send(packet)
            self.arm([packet])

    # download side

    def blockCount(self) -> int:
        return len(self.content) // self.blksize + 1

    def blockData(self, absolute: int) -> bytes:
        start = (absolute - 1) * self.blksize
        return self.content[start : start + self.blksize]

    def sendWindow(self) -> None:
        first = self.acked + 1
        last = min(self.acked + self.windowsize, self.blockCount())
        packets = []
        for absolute in range(first, last + 1):
            if self.script.errorAfterBlock is not None and absolute > self.script.errorAfterBlock:
                self.send(Error(*self.script.errorPacket).toBytes())
                self.finish()
                return
            if self.script.strayAtBlock == absolute:
                self.sendStray(absolute)
            packets.append(encodeData(self.wire(absolute), self.blockData(absolute)))
        if self.script.swapBlocks is not None and len(packets) > 1:
            a, b = self.script.swapBlocks
            if first <= a < b <= last:
                packets[a - first], packets[b - first] = packets[b - first], packets[a - first]
        for packet in packets:
            self.send(packet)
            if self.script.duplicateData:
                self.send(packet)
        self.arm(packets)

    def sendStray(self, absolute: int) -> None:
        stray = StrayPort(self)
        port = self.reactor.listenUDP(0, stray, interface=self.transport.interface)
        port.write(encodeData(self.wire(absolute), b"X" * 3), self.peer)
        self.strayPort = port

    # upload side and ACKs

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self.peer:
            self.strays.append((data, addr))
            self.transport.write(Error(5, "Unknown transfer ID").toBytes(), addr)
            return
        packet = parsePacket(data)
        if isinstance(packet, Error):
            self.errors.append(packet)
            self.finish()
            return
        if self.done:
            return
        if isinstance(packet, Ack) and isinstance(self.request, ReadRequest):
            self.onAck(packet.block)
        elif isinstance(packet, Data) and isinstance(self.request, WriteRequest):
            self.onData(packet)

    def onAck(self, wireBlock: int) -> None:
        # Map the wire number to the absolute block nearest above what was acked.
        candidates = [
            a
            for a in range(self.acked, min(self.acked + self.windowsize, self.blockCount()) + 1)
            if self.wire(a) == wireBlock or (a == 0 and wireBlock == 0)
        ]
        if not candidates:
            return  # old duplicate
        absolute = max(candidates)
        if absolute <= self.acked and absolute != 0:
            return
        self.acked = max(self.acked, absolute)
        self.tries = 0
        if self.acked >= self.blockCount():
            self.cancelTimer()
            final = encodeData(self.wire(self.acked), self.blockData(self.acked))
            for i in range(self.script.repeatFinal):
                self.reactor.callLater(0.1 * (i + 1), self.resendFinal, final)
            if not self.script.repeatFinal:
                self.finish()
            return
        self.sendWindow()

    def resendFinal(self, final: bytes) -> None:
        if self.done:
            return
        self.send(final)
        self.repeated = getattr(self, "repeated", 0) + 1
        if self.repeated >= self.script.repeatFinal:
            self.reactor.callLater(0.5, self.finish)

    def onData(self, packet: Data) -> None:
        if packet.block == self.wire(self.expected):
            if self.script.errorAfterBlock is not None and self.expected > (
                self.script.errorAfterBlock
            ):
                self.send(Error(*self.script.errorPacket).toBytes())
                self.finish()
                return
            self.received += packet.data
            last = len(packet.data) < self.blksize
            if self.script.strayAtBlock == self.expected:
                stray = StrayPort(self)
                port = self.reactor.listenUDP(0, stray, interface=self.transport.interface)
                port.write(encodeAck(self.wire(self.expected)), self.peer)
                self.strayPort = port
            if last or self.expected % self.windowsize == 0:
                ack = encodeAck(packet.block)
                self.send(ack)
                if last:
                    self.server.uploads[self.request.filename] = bytes(self.received)
                    self.cancelTimer()
                    # Dally: answer a repeated final DATA for a while.
                    self.timer = self.reactor.callLater(3 * self.script.timeout, self.finish)
                    self.expected += 1
                    self.finalSent = True
                    return
                self.arm([ack])
            self.expected += 1
            self.tries = 0
        elif self.finalSent and packet.block == self.wire(self.expected - 1):
            self.send(encodeAck(packet.block))
        else:
            # Out of order: ACK the last in-order block (RFC 7440).
            ack = encodeAck(self.wire(self.expected - 1))
            self.send(ack)


class StrayPort(DatagramProtocol):
    """A second socket of the server's host: what it sends is from the wrong TID."""

    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.transport.stopListening()
