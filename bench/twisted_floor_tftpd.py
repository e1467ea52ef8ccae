"""
The leanest TFTP download server we know how to write on Twisted: a reference point for
bench/tftp_bench.py next to python_floor_tftpd.py, not a server to use.

It does what the python floor does, with the same request handling (its C{readRequest}):
downloads only (octet, blksize and tsize, windowsize 1); each DATA one C{sendmsg} of a
4-byte header and a slice of the file's mapping; no limits, no logging. But it is a
Twisted program: a C{DatagramProtocol} per transfer on its own C{listenUDP} port (one read
per wake-up), read by the reactor, with a C{callLater} for resends. The two floors differ
only by what the reactor costs per datagram (its iteration, timed calls and per-read
dispatch), so the benchmark can tell Twisted's cost from the suite's own.

    python bench/twisted_floor_tftpd.py PORT ROOT
"""

from __future__ import annotations

import sys
from typing import Any

from python_floor_tftpd import HEADER, RESEND_AFTER, RETRIES, readRequest, start
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

REACTOR: Any = reactor


class Transfer(DatagramProtocol):
    def __init__(self, peer: tuple[str, int], data: memoryview, blksize: int) -> None:
        self.peer = peer
        self.data = data
        self.blksize = blksize
        self.block = 0  # the block last sent (0: the OACK)
        self.tries = 0
        self.deadline = 0.0
        self.lastPacket: list[bytes | memoryview] = []
        self.timer: Any = None

    def send(self, buffers: list[bytes | memoryview]) -> None:
        self.lastPacket = buffers
        self.deadline = REACTOR.seconds() + RESEND_AFTER
        if self.timer is None:
            self.timer = REACTOR.callLater(RESEND_AFTER, self.timedOut)
        self.transport.socket.sendmsg(buffers, (), 0, self.peer)  # type: ignore[union-attr]

    def sendBlock(self, block: int) -> None:
        start = (block - 1) * self.blksize
        self.block = block
        self.send([HEADER.pack(3, block & 0xFFFF), self.data[start : start + self.blksize]])

    def datagramReceived(self, packet: bytes, source: Any) -> None:
        if source != self.peer or len(packet) < 4:
            return
        opcode, block = HEADER.unpack_from(packet)
        if opcode == 5:
            self.end()
        elif opcode == 4 and block == self.block & 0xFFFF:
            if self.block and self.block * self.blksize > len(self.data):
                self.end()
                return
            self.tries = 0
            self.sendBlock(self.block + 1)

    def timedOut(self) -> None:
        """The timer moves lazily: it fires once per interval, not once per block."""
        self.timer = None
        remaining = self.deadline - REACTOR.seconds()
        if remaining > 0:
            self.timer = REACTOR.callLater(remaining, self.timedOut)
            return
        self.tries += 1
        if self.tries > RETRIES:
            self.end()
        else:
            self.send(self.lastPacket)

    def end(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport.stopListening()  # type: ignore[union-attr]


class Listener(DatagramProtocol):
    def __init__(self, root: str) -> None:
        self.root = root

    def datagramReceived(self, request: bytes, peer: Any) -> None:
        wanted = readRequest(request, self.root)
        if isinstance(wanted, bytes):
            self.transport.write(wanted, peer)  # type: ignore[union-attr]
            return
        transfer = Transfer(peer, wanted.data, wanted.blksize)
        port = REACTOR.listenUDP(0, transfer, interface="127.0.0.1")
        # One datagram per wake-up: the client answers each DATA with one ACK, and a
        # second recvfrom would only raise EAGAIN (the suite's transfer ports do the same).
        port.maxThroughput = 1
        start(transfer, wanted.oack)


def main() -> None:
    port, root = int(sys.argv[1]), sys.argv[2]
    REACTOR.listenUDP(port, Listener(root), interface="127.0.0.1")
    REACTOR.run()


if __name__ == "__main__":
    main()
