"""
The leanest TFTP download server we know how to write on Twisted: a reference point for
bench/tftp_bench.py next to python_floor_tftpd.py, not a server to use.

It does what the python floor does (downloads only: octet, blksize and tsize, windowsize
1; each DATA one C{sendmsg} of a 4-byte header and a slice of the file's mapping; no
limits, no logging), but as a Twisted program: a C{DatagramProtocol} per transfer on its
own C{listenUDP} port (one read per wake-up), read by the reactor, with a C{callLater}
for resends. The two
floors differ only by what the reactor costs per datagram (its iteration, timed calls and
per-read dispatch), so the benchmark can tell Twisted's cost from the suite's own.

    python bench/twisted_floor_tftpd.py PORT ROOT
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

HEADER = struct.Struct("!HH")
RESEND_AFTER = 1.0
RETRIES = 5
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
        fields = request[2:].split(b"\0")
        name = fields[0].decode(errors="replace")
        if request[:2] != b"\0\1" or "/" in name or name.startswith("."):
            self.transport.write(b"\0\5\0\2refused\0", peer)  # type: ignore[union-attr]
            return
        try:
            with open(os.path.join(self.root, name), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                mapping = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else b""
        except OSError:
            self.transport.write(b"\0\5\0\1not found\0", peer)  # type: ignore[union-attr]
            return
        options = {k.lower(): v for k, v in zip(fields[2::2], fields[3::2], strict=False)}
        blksize = min(int(options.get(b"blksize", 512)), 65464)
        transfer = Transfer(peer, memoryview(mapping), blksize)
        port = REACTOR.listenUDP(0, transfer, interface="127.0.0.1")
        # One datagram per wake-up: the client answers each DATA with one ACK, and a
        # second recvfrom would only raise EAGAIN (the suite's transfer ports do the same).
        port.maxThroughput = 1
        granted = b""
        if b"blksize" in options:
            granted += b"blksize\0%d\0" % blksize
        if b"tsize" in options:
            granted += b"tsize\0%d\0" % size
        if granted:
            transfer.send([b"\0\6" + granted])
        else:
            transfer.sendBlock(1)


def main() -> None:
    port, root = int(sys.argv[1]), sys.argv[2]
    REACTOR.listenUDP(port, Listener(root), interface="127.0.0.1")
    REACTOR.run()


if __name__ == "__main__":
    main()
