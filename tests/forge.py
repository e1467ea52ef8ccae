"""
Send one UDP datagram with a forged IPv4 source address, from a raw socket, and report what
comes back: for tests that run it inside a network namespace of their own
(C{ip netns exec NS python tests/forge.py ...}); never anywhere else.

    python tests/forge.py SOURCE SPORT DEST DPORT HEXPAYLOAD [CLIENT HEXJOIN]

With CLIENT, a real member first sends HEXJOIN from CLIENT to DEST:DPORT and waits for its
answer (a chat room's welcome).  Then the forged datagram goes out, and for 2 s every
datagram that arrives is printed as C{member|source ADDRESS HEX}: C{member} on the real
member's socket, C{source} on a socket bound to all addresses on SPORT, which hears anything
sent to the forged source (a directed broadcast is looped back to the sending host).
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = str(Path(__file__).resolve())


async def forge(
    reactor: Any,
    namespace: list[str],
    source: tuple[str, int],
    dest: tuple[str, int],
    payload: bytes,
    member: tuple[str, bytes] | None = None,
) -> list[tuple[str, str, bytes]]:
    """
    Run this script inside C{namespace} (a command prefix); return what arrived, as
    (C{"member"} or C{"source"}, sender address, data).
    """
    from tests.process import runProcess

    argv = [*namespace, sys.executable, SCRIPT, source[0], str(source[1]), dest[0],
            str(dest[1]), payload.hex()]  # fmt: skip
    if member is not None:
        argv += [member[0], member[1].hex()]
    out, err, code = await runProcess(reactor, argv, timeout=30)
    assert code == 0, err
    arrived = []
    for line in out.decode().splitlines():
        where, address, data = line.split()
        arrived.append((where, address, bytes.fromhex(data)))
    return arrived


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forgedDatagram(source: tuple[str, int], dest: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 packet carrying a UDP datagram (no UDP checksum, allowed over IPv4)."""
    udp = struct.pack("!HHHH", source[1], dest[1], 8 + len(payload), 0) + payload
    addresses = socket.inet_aton(source[0]) + socket.inet_aton(dest[0])
    header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + addresses
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def main() -> None:
    source = (sys.argv[1], int(sys.argv[2]))
    dest = (sys.argv[3], int(sys.argv[4]))
    payload = bytes.fromhex(sys.argv[5])
    sockets: dict[socket.socket, str] = {}
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("", source[1]))
    sockets[listener] = "source"
    if len(sys.argv) > 6:
        member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        member.bind((sys.argv[6], 0))
        member.settimeout(10)
        member.sendto(bytes.fromhex(sys.argv[7]), dest)
        member.recvfrom(65536)  # joined: the room answered
        sockets[member] = "member"
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(forgedDatagram(source, dest, payload), (dest[0], 0))
    end = time.monotonic() + 2
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(list(sockets), [], [], left)
        for sock in ready:
            data, sender = sock.recvfrom(65536)
            sys.stdout.write(f"{sockets[sock]} {sender[0]}:{sender[1]} {data.hex() or '-'}\n")


if __name__ == "__main__":
    main()
