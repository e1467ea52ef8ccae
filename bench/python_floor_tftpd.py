"""
The fastest TFTP download server we know how to write in Python: a reference point for
bench/tftp_bench.py, not a server to use.

One thread, one epoll loop, raw sockets; downloads only (octet, blksize, tsize and
windowsize); the file is mapped into memory and each DATA is sent with one
C{sendmsg} of a 4-byte header and a slice of the mapping, so there is no read call
and no copy in Python at all; a window goes out in as few C{sendmsg} calls as UDP
segmentation offload allows (Linux GSO: 64 datagrams or 64 KiB a call). No limits, no
confinement beyond a plain name check, no logging: it shows how close any Python server
can come to tftpd-hpa's C on the same client, so the benchmark can tell Python's cost
from ours.

    python bench/python_floor_tftpd.py PORT ROOT
"""

from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import sys
import time
from typing import Any, NamedTuple

HEADER = struct.Struct("!HH")
RESEND_AFTER = 1.0
RETRIES = 5
UDP_SEGMENT = 103  # Linux: the GSO segment size of one sendmsg (not in Python's socket)
MAX_WINDOW = 64


class Transfer:
    def __init__(
        self, peer: tuple[str, int], data: memoryview, blksize: int, windowsize: int = 1
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.peer = peer
        self.data = data
        self.blksize = blksize
        self.windowsize = windowsize
        self.final = len(data) // blksize + 1  # the last block (short, maybe empty)
        self.block = 0  # the block last sent (0: the OACK)
        self.acked = 0  # the block last acknowledged
        self.tries = 0
        self.sentAt = 0.0
        self.lastPacket: list[bytes | memoryview] = []
        self.segmented = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("@H", 4 + blksize))]
        self.perCall = max(1, min(64, 65507 // (4 + blksize)))  # (1: too big to batch)

    def send(self, buffers: list[bytes | memoryview]) -> None:
        self.lastPacket = buffers
        self.sentAt = time.monotonic()
        self.sock.sendmsg(buffers, (), 0, self.peer)

    def sendBlock(self, block: int) -> None:
        start = (block - 1) * self.blksize
        self.block = block
        self.send([HEADER.pack(3, block & 0xFFFF), self.data[start : start + self.blksize]])

    def sendWindow(self, first: int) -> None:
        """Blocks C{first} on, up to a window, each GSO batch in one C{sendmsg}."""
        last = min(first + self.windowsize - 1, self.final)
        if last == first:
            self.sendBlock(first)
            return
        blksize, data, pack = self.blksize, self.data, HEADER.pack
        self.block = last
        self.sentAt = time.monotonic()
        for batch in range(first, last + 1, self.perCall):
            buffers: list[bytes | memoryview] = []
            for block in range(batch, min(batch + self.perCall - 1, last) + 1):
                start = (block - 1) * blksize
                buffers += (pack(3, block & 0xFFFF), data[start : start + blksize])
            control = self.segmented if len(buffers) > 2 else ()
            self.sock.sendmsg(buffers, control, 0, self.peer)

    def ackReceived(self, block: int) -> bool:
        """Advance on an ACK of a block sent (RFC 7440: one inside the window means the
        rest was lost, and the next window starts after it); True when the transfer is
        over."""
        covered = (block - self.acked) & 0xFFFF
        if (covered == 0 and self.block) or covered > self.block - self.acked:
            return False
        self.acked += covered
        if self.acked == self.final:
            return True
        self.tries = 0
        if self.windowsize == 1:
            self.sendBlock(self.acked + 1)  # (lock-step as lean as it was before windows)
        else:
            self.sendWindow(self.acked + 1)
        return False

    def timedOut(self) -> None:
        if self.block and self.windowsize > 1:
            self.sendWindow(self.acked + 1)
        else:
            self.send(self.lastPacket)


class Request(NamedTuple):
    """A download to start: the file's mapping, the block and window sizes, and the OACK
    to send first (None: the client asked for no option, so DATA 1 goes first)."""

    data: memoryview
    blksize: int
    windowsize: int
    oack: bytes | None


def readRequest(request: bytes, root: str, windows: bool = False) -> Request | bytes:
    """A download to start, or the ERROR packet that answers C{request}; C{windows}: grant
    a windowsize option (RFC 7440)."""
    fields = request[2:].split(b"\0")
    name = fields[0].decode(errors="replace")
    if request[:2] != b"\0\1" or "/" in name or name.startswith("."):
        return b"\0\5\0\2refused\0"
    try:
        with open(os.path.join(root, name), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mapping = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else b""
    except OSError:
        return b"\0\5\0\1not found\0"
    options = {k.lower(): v for k, v in zip(fields[2::2], fields[3::2], strict=False)}
    blksize = min(int(options.get(b"blksize", 512)), 65464)
    granted = b""
    if b"blksize" in options:
        granted += b"blksize\0%d\0" % blksize
    if b"tsize" in options:
        granted += b"tsize\0%d\0" % size
    windowsize = 1
    if windows and b"windowsize" in options:
        windowsize = min(int(options[b"windowsize"]), MAX_WINDOW)
        granted += b"windowsize\0%d\0" % windowsize
    return Request(memoryview(mapping), blksize, windowsize, b"\0\6" + granted if granted else None)


def start(transfer: Transfer | Any, oack: bytes | None) -> None:
    """Send a new transfer's first packet: the OACK, or DATA 1."""
    if oack is not None:
        transfer.send([oack])
    else:
        transfer.sendBlock(1)


def main() -> None:
    port, root = int(sys.argv[1]), sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    transfers: dict[int, Transfer] = {}

    def end(transfer: Transfer) -> None:
        poller.unregister(transfer.sock.fileno())
        del transfers[transfer.sock.fileno()]
        transfer.sock.close()

    while True:
        for fd, _ in poller.poll(RESEND_AFTER / 4):
            if fd == listener.fileno():
                request, peer = listener.recvfrom(65536)
                wanted = readRequest(request, root, windows=True)
                if isinstance(wanted, bytes):
                    listener.sendto(wanted, peer)
                    continue
                transfer = Transfer(peer, wanted.data, wanted.blksize, wanted.windowsize)
                transfers[transfer.sock.fileno()] = transfer
                poller.register(transfer.sock.fileno(), select.EPOLLIN)
                start(transfer, wanted.oack)
                continue
            transfer = transfers[fd]
            try:
                packet, source = transfer.sock.recvfrom(65536)
            except BlockingIOError:
                continue
            if source != transfer.peer or len(packet) < 4:
                continue
            opcode, block = HEADER.unpack_from(packet)
            if opcode == 5 or (opcode == 4 and transfer.ackReceived(block)):
                end(transfer)
        now = time.monotonic()
        for transfer in list(transfers.values()):
            if now - transfer.sentAt > RESEND_AFTER:
                transfer.tries += 1
                if transfer.tries > RETRIES:
                    end(transfer)
                else:
                    transfer.timedOut()


if __name__ == "__main__":
    main()
