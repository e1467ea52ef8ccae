"""
The fastest TFTP download client we know how to write in Python: with
bench/python_floor_tftpd.py, the windowed pair that bench/tftp_bench.py sets beside ours
(and atftp's, pytftp's), not a client to use.

Octet downloads with blksize and windowsize (RFC 7440). One socket; UDP GRO, so a window
sent in GSO batches arrives in a read or a few; the socket's receive buffer forced to
hold two windows; blocks in order are written in one C{write} a read; the ACK goes at the
end of each window (or at once on a gap: the last block in order), before the write; an
fsync at the end, as ours does. No retries beyond a few re-ACKs, no checks beyond block
numbers, no logging.

    python bench/python_floor_tftp.py PORT NAME OUT BLKSIZE WINDOWSIZE
"""

from __future__ import annotations

import os
import socket
import struct
import sys

HEADER = struct.Struct("!HH")
UDP_GRO = 104  # Linux: coalesced reads, segment size in a control message
SO_RCVBUFFORCE = 33
TRIES = 5


def download(port: int, name: str, out: str, blksize: int, windowsize: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 2 * windowsize * (blksize + 512))
    sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
    sock.settimeout(1.0)
    request = b"\0\1%s\0octet\0blksize\0%d\0windowsize\0%d\0" % (
        name.encode(),
        blksize,
        windowsize,
    )
    sock.sendto(request, ("127.0.0.1", port))
    last = request  # what a timeout sends again
    peer: tuple[str, int] | None = None
    space = socket.CMSG_SPACE(4)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    expected = 1  # the next block in order
    inWindow = 0
    tries = 0
    done = False
    try:
        while not done:
            try:
                data, ancillary, _, source = sock.recvmsg(65536, space)
            except TimeoutError:
                tries += 1
                if tries > TRIES:
                    raise SystemExit("no answer") from None
                sock.sendto(last, peer or ("127.0.0.1", port))
                continue
            if peer is None:
                peer = source
            elif source != peer:
                continue
            size = len(data)
            for _, kind, value in ancillary:
                if kind == UDP_GRO:
                    size = struct.unpack("@i", value[:4])[0]
            view = memoryview(data)
            payloads = []
            gap = False
            for at in range(0, len(data), size):
                opcode, number = HEADER.unpack_from(view, at)
                if opcode == 6:  # the OACK: everything asked for was granted
                    inWindow = windowsize
                    continue
                if opcode != 3:
                    raise SystemExit(bytes(view[at + 4 : at + size]).decode(errors="replace"))
                if number != expected & 0xFFFF:
                    gap = True
                    continue
                payload = view[at + 4 : at + size]
                payloads.append(payload)
                expected += 1
                inWindow += 1
                if len(payload) < blksize:
                    done = True
                    break
            if done or gap or inWindow >= windowsize:
                last = HEADER.pack(4, (expected - 1) & 0xFFFF)
                sock.sendto(last, peer)
                inWindow = 0
                tries = 0
            if payloads:
                os.write(fd, b"".join(payloads))
        os.fsync(fd)
    finally:
        os.close(fd)
        sock.close()


if __name__ == "__main__":
    port, name, out, blksize, windowsize = sys.argv[1:6]
    download(int(port), name, out, int(blksize), int(windowsize))
