"""
A bounded, seeded fuzzer for the suite's running services (#16 §5), run by the soak test
as a process (C{python -m tests.soak.fuzzer PLAN.json}) against the installed twistd.

Each input is random bytes, a valid input of the service's corpus, or one mutated (bits
flipped, bytes replaced, inserted, deleted, cut, repeated, or two inputs spliced, and
"interesting" values: NULs, 0xff, huge numbers, C{../}, long runs). The inputs come from
one C{random.Random(seed)}, so a run's inputs repeat exactly (what the server answered
and when may not: it is a real process; nor do the packet numbers of the files IPMsg
really offers the fuzzer, L{offeredRequests}).

UDP targets get datagrams from many loopback source addresses in turn (127.0.2.1, ...),
so that each source stays under the services' per-source limits and the parsers, not the
limiters, see most inputs; the datagrams are paced at C{rate} a second. A target that
answers from other ports (TFTP's transfer ports) also gets mutated datagrams there. TCP
targets get connections that send a few (mutated) request lines in random pieces, read
what comes back for a moment, and close or reset.

Prints one JSON line: inputs sent, bytes both ways, and per source the bytes sent and
received (for the no-amplification check of the services that promise it), or for IPMsg
(given C{attempts}) the sources that got more datagrams than L{ipmsgAnswersAllowed}
allows for what they sent.

To fuzz another service: add its corpus to L{CORPORA} (a function of the served file
names returning valid inputs), with its kind in L{KINDS}, and a target entry in
C{tests/soak/test_fuzz.py}.
"""

from __future__ import annotations

import json
import random
import resource
import selectors
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_INTERESTING = [
    b"\0",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"0",
    b"-1",
    b"65535",
    b"65536",
    b"99999999999999999999",
    b"../",
    b"/",
    b"\\",
    b"%s%n",
    b"\r\n",
    b"\n",
    b" ",
    b"\xc3\x28",
    b"A" * 300,
]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One to four random edits of C{data}."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        edit = rng.randrange(9)
        where = rng.randrange(len(out) + 1)
        if edit == 0 and out:
            out[min(where, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif edit == 1 and out:
            out[min(where, len(out) - 1)] = rng.randrange(256)
        elif edit == 2:
            out[where:where] = rng.choice(_INTERESTING)
        elif edit == 3:
            del out[where : where + rng.randrange(1, 16)]
        elif edit == 4:
            del out[where:]
        elif edit == 5:
            piece = out[where : where + rng.randrange(1, 64)]
            out[where:where] = piece * rng.randrange(1, 8)
        elif edit == 6:
            other = rng.choice(corpus)
            out = out[:where] + other[rng.randrange(len(other) + 1) :]
        elif edit == 7:
            out[where:where] = rng.randbytes(rng.randrange(1, 32))
        else:
            out[where:where] = str(rng.choice([0, 1, 7, 8, 255, 512, 65464, 65465, 2**31])).encode()
    return bytes(out)


def generate(rng: random.Random, corpus: list[bytes]) -> bytes:
    """Random bytes (a tenth), a valid input (a fifth), or a mutated one."""
    kind = rng.random()
    if kind < 0.1:
        return rng.randbytes(rng.randrange(0, 1600))
    if kind < 0.3:
        return rng.choice(corpus)
    return mutate(rng, rng.choice(corpus), corpus)


# Corpora: valid inputs of each service.


def _tftp(names: list[str]) -> list[bytes]:
    packets = []
    for name in names:
        n = name.encode()
        packets += [
            b"\0\1" + n + b"\0octet\0",
            b"\0\1" + n + b"\0netascii\0",
            b"\0\1" + n + b"\0octet\0blksize\0001428\0tsize\0000\0",
            b"\0\1" + n + b"\0octet\0blksize\08192\0windowsize\08\0timeout\0001\0",
            b"\0\2up-" + n + b"\0octet\0tsize\000100\0",
            b"\0\2up-" + n + b"\0octet\0blksize\0512\0",
        ]
    packets += [
        struct.pack("!HH", 4, 0),
        struct.pack("!HH", 4, 1),
        struct.pack("!HH", 4, 65535),
        struct.pack("!HH", 3, 1) + b"x" * 100,
        struct.pack("!HH", 3, 1) + b"y" * 512,
        struct.pack("!HH", 5, 0) + b"cancelled\0",
        b"\0\6blksize\0512\0",
    ]
    return packets


def _echo(names: list[str]) -> list[bytes]:
    return [b"hello", b"x" * 1400, b"\0" * 64, "émoji 🙂".encode()]


def _chatroom(names: list[str]) -> list[bytes]:
    return [
        b"JOIN fuzz",
        b"JOIN f-" + names[0].encode()[:10],
        b"MSG hello there",
        b"hello everyone\n",
        b"NICK renamed",
        b"WHO",
        b"PING",
        b"RESEND 1",
        b"RESEND 1 50",
        b"RESEND 3 2",
        b"LEAVE",
        b"MSG \x1b[2J",
    ]


def _responder(names: list[str]) -> list[bytes]:
    from twisted_udpsuite.discovery import wire

    probes = []
    for n in range(4):
        message = wire.Message(
            wire.Kind.PROBE,
            bytes([n + 1]) * wire.INSTANCE_SIZE,
            requestId=n,
            maxDelay=0.05,
            padTo=wire.PROBE_MIN_SIZE + 8 * n,
        )
        probes.append(message.toBytes())
    announce = wire.Message(wire.Kind.ANNOUNCE, b"\7" * wire.INSTANCE_SIZE, lifetime=30, name="x")
    return [*probes, announce.toBytes()]


def _files(names: list[str]) -> list[bytes]:
    lines = [b"LIST \n", b"LIST sub\n", b"STAT sub\n", b"FETCH 0 - missing\n"]
    for name in names:
        n = name.encode()
        lines += [
            b"FETCH 0 - " + n + b"\n",
            b"FETCH 3 - " + n + b"\n",
            b"FETCH 0 0123456789abcdef " + n + b"\n",
            b"STAT " + n + b"\n",
        ]
    return lines


def _http(names: list[str]) -> list[bytes]:
    requests = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /sub/ HTTP/1.0\r\n\r\n"]
    for name in names:
        n = name.encode()
        requests += [
            b"GET /" + n + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /" + n + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /" + n + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=5-20\r\n\r\n",
            b"GET /" + n + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=-3,7-\r\n\r\n",
        ]
    return requests


def _ipmsg(names: list[str]) -> list[bytes]:
    """IPMsg datagrams, as built by its own codec (so valid ones), with GBK where peers write it."""
    from twisted_udpsuite.ipmsg import wire
    from twisted_udpsuite.ipmsg.wire import Attachment, Mode, Packet

    caps = wire.FILEATTACHOPT | wire.CAPUTF8OPT
    check = Mode.SENDMSG | wire.SENDCHECKOPT

    def packet(version: str, command: int, body: str = "", *extra: str, **kw: str) -> bytes:
        user, host, encoding = kw.get("user", "fuzz"), kw.get("host", "pc"), kw.get("enc", "utf-8")
        return Packet(version, 1_700_000_000, user, host, command, body, extra, encoding).toBytes()

    extension = wire.entryExtension("fuzz", "pc", "模糊 fuzz", "测试组")
    offer = wire.encodeAttachments(
        [
            Attachment(0, names[0], 3000, 0x6560_0000),
            Attachment(1, "a::b:c.txt", 0x10, 0x6560_0000, 1, ("16=6560abcd", "14=0")),
            Attachment(2, "目录", 0, 0, Attachment.DIRECTORY),
            Attachment(3, "../../etc/passwd", 7, 0),
            Attachment(4, "big", 2**40, 0),
        ]
    )
    return [
        # Entries: plain, GBK (no UTF8OPT), draft-10 extension, iptux's, absence, exit.
        b"1:1:a:b:1:",
        packet("1", Mode.BR_ENTRY | caps, "fuzz", "lab", extension),
        packet(
            "1_lbt4_10#128#000C29000000#0#0#0#4001#9",
            Mode.BR_ENTRY | caps,
            "张三",
            "研发部",
            extension,
            enc="gbk",
        ),
        packet(
            "1_iptux 0.8.3", Mode.BR_ENTRY | wire.ABSENCEOPT | caps, "tux", "lab", "icon", "utf-8"
        ),
        packet("1", Mode.ANSENTRY | caps, "fuzz", "lab", extension),
        packet("1", Mode.BR_ABSENCE | wire.ABSENCEOPT, "fuzz [away]", "lab"),
        packet("1", Mode.BR_EXIT, "fuzz", "lab"),
        # Messages: acknowledged, GBK, sealed with a read check, broadcast, auto-reply,
        # retried, not to be listed.
        packet("1", check | wire.UTF8OPT, "hello 你好 🙂"),
        packet("1", check, "你好,世界", enc="gbk"),
        packet("1", check | wire.SECRETOPT | wire.READCHECKOPT | wire.UTF8OPT, "sealed"),
        packet("1", Mode.SENDMSG | wire.SECRETOPT, "sealed, no check"),
        packet("1", check | wire.BROADCASTOPT, "to all"),
        packet("1", check | wire.AUTORETOPT, "I am away"),
        packet("1", check | wire.RETRYOPT | wire.NOADDLISTOPT, "again"),
        packet("1", check | wire.UTF8OPT, "x" * 1200),
        # File offers: "::" in a name, a directory, a path, a huge size, iptux's separators.
        packet("1", check | wire.FILEATTACHOPT | wire.UTF8OPT, "files", offer),
        packet("1", check | wire.FILEATTACHOPT, "", "0:" + names[0] + ":bb8:0:1:\a:", enc="gbk"),
        packet("1", check | wire.FILEATTACHOPT, "twins", "0:twin.txt:10:0:1:\a1:twin.txt:20:0:1:"),
        # Answers, read checks, information, files.
        packet("1", Mode.RECVMSG, "1700000000"),
        packet("1", Mode.READMSG | wire.READCHECKOPT, "1700000000"),
        packet("1", Mode.READMSG, "1700000000"),
        packet("1", Mode.ANSREADMSG, "1700000000"),
        packet("1", Mode.GETINFO),
        packet("1", Mode.GETABSENCEINFO),
        packet("1", Mode.RELEASEFILES, "1700000000"),
        packet("1_iptux 0.8.3", Mode.IPTUX_ASKSHARED),
        packet("1", Mode.GETFILEDATA, "6553f100:0:0"),
        packet("1", Mode.GETLIST),
        packet("1", Mode.IPTUX_SENDMSG | wire.UTF8OPT, "group chat", "lab"),
    ]


def _ipmsgFiles(names: list[str]) -> list[bytes]:
    """GETFILEDATA requests; L{fuzzTCP} adds ones for files really offered to it."""
    from twisted_udpsuite.ipmsg.wire import FileRequest

    requests = []
    for request in (FileRequest(0x6553F100, 0), FileRequest(1, 2, 0x10), FileRequest(2**63, 0)):
        requests.append(_getFileData(request))
    return requests + [b"1:1:a:b:96:0:0:0:", b"1:1:a:b:96:0:0:0\0"]


def _getFileData(request: Any) -> bytes:
    from twisted_udpsuite.ipmsg.wire import Mode, Packet

    header = Packet("1_iptux 0.8.3", 7, "fuzz", "pc", Mode.GETFILEDATA, request.toText())
    return header.toBytes() + b"\0"


def offeredRequests(target: tuple[str, int]) -> list[bytes]:
    """
    GETFILEDATA requests for files really offered to us (127.0.0.1): ask the IPMsg
    service for its shared files (iptux's ASKSHARED), acknowledge the offer, and request
    each file from its start, its middle, its end and beyond.
    """
    from twisted_udpsuite.ipmsg import wire
    from twisted_udpsuite.ipmsg.wire import FileRequest, Mode, Packet

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    try:
        ask = Packet("1_iptux 0.8.3", 1, "fuzz", "pc", Mode.IPTUX_ASKSHARED)
        sock.sendto(ask.toBytes(), target)
        while True:
            offer = wire.decodePacket(sock.recv(65536))
            if offer.mode == Mode.SENDMSG and offer.has(wire.FILEATTACHOPT):
                break
        ack = Packet("1", 2, "fuzz", "pc", Mode.RECVMSG, str(offer.packetNo))
        sock.sendto(ack.toBytes(), target)
    finally:
        sock.close()
    requests = []
    for attachment in wire.parseAttachments(offer.extra[0]):
        for offset in (0, attachment.size // 2, attachment.size, attachment.size + 1):
            request = FileRequest(offer.packetNo, attachment.fileId, offset)
            requests.append(_getFileData(request))
    return requests


CORPORA: dict[str, Callable[[list[str]], list[bytes]]] = {
    "tftp": _tftp,
    "echo": _echo,
    "chatroom": _chatroom,
    "responder": _responder,
    "files": _files,
    "http": _http,
    "ipmsg": _ipmsg,
    "ipmsg-files": _ipmsgFiles,
}
"""Valid inputs per service, from the names of the files it serves."""

KINDS = {"tftp": "udp", "echo": "udp", "chatroom": "udp", "responder": "udp", "ipmsg": "udp"}
"""How each service is reached; anything not here is TCP."""


def ipmsgAnswersAllowed(data: bytes, attempts: int) -> int:
    """
    The most datagrams the IPMsg service promises to write back for C{data}: nothing for
    what is not an IPMsg packet or asks for nothing; one answer (ANSENTRY to BR_ENTRY,
    RECVMSG to SENDMSG with SENDCHECKOPT unless BROADCASTOPT or AUTORETOPT, ANSREADMSG to
    READMSG with READCHECKOPT, SENDINFO, SENDABSENCEINFO); and what it sends until
    acknowledged, up to C{attempts} times: the READMSG of a sealed message it opens when
    that asks for a read check (else once), the offer of its shared files to iptux's
    ASKSHARED.
    """
    from twisted_udpsuite.ipmsg import wire
    from twisted_udpsuite.ipmsg.wire import MalformedPacket, Mode

    try:
        command = wire.splitPacket(data).command
    except MalformedPacket:
        return 0
    mode = command & 0xFF
    if mode == Mode.SENDMSG:
        acknowledged = command & wire.SENDCHECKOPT and not command & (
            wire.BROADCASTOPT | wire.AUTORETOPT
        )
        opened = 0
        if command & wire.SECRETOPT:
            opened = attempts if command & wire.READCHECKOPT else 1
        return bool(acknowledged) + opened
    if mode == Mode.READMSG:
        return int(bool(command & wire.READCHECKOPT))
    if mode == Mode.IPTUX_ASKSHARED:
        return attempts
    return int(mode in (Mode.BR_ENTRY, Mode.GETINFO, Mode.GETABSENCEINFO))


def ipmsgAcknowledgement(rng: random.Random, answer: bytes) -> bytes | None:
    """
    What a fuzz source says back to a packet of the IPMsg service that waits for an
    answer (a READMSG with READCHECKOPT, an offer of shared files), half of the time:
    the right acknowledgement, or one naming the opened message instead.
    """
    from twisted_udpsuite.ipmsg import wire
    from twisted_udpsuite.ipmsg.wire import MalformedPacket, Mode, Packet

    try:
        packet = wire.decodePacket(answer)
    except MalformedPacket:
        return None
    if rng.random() < 0.5:
        return None
    if packet.mode == Mode.READMSG and packet.has(wire.READCHECKOPT):
        number = str(packet.packetNo) if rng.random() < 0.7 else packet.body
        return Packet("1", rng.randrange(2**32), "fuzz", "pc", Mode.ANSREADMSG, number).toBytes()
    if packet.mode == Mode.SENDMSG and packet.has(wire.SENDCHECKOPT):
        number = str(packet.packetNo)
        return Packet("1", rng.randrange(2**32), "fuzz", "pc", Mode.RECVMSG, number).toBytes()
    return None


PATTERN = bytes(range(251)) * 4200
"""What the fuzz sources serve as the files they offer IPMsg: byte C{k} of each is
C{PATTERN[k]} (up to 1 MiB), so that a file the service publishes can be checked."""


class FileSenders:
    """
    IPMsg: the fuzz sources' side of the files they offer. The first C{count} sources
    also listen on TCP at their own address and port, where the service's drop box comes
    to fetch what they offered (as recorded from the offers they sent), and each request
    for a file it offered is answered one way at random: the whole file (L{PATTERN} from
    the offset asked for), less, more, nothing, a reset, or no answer until the end; any
    other request, garbage.
    """

    FOR_OFFERED = ("whole", "short", "long", "close", "reset", "hold")
    WAYS = (*FOR_OFFERED, "garbage")

    def __init__(
        self,
        rng: random.Random,
        sockets: list[socket.socket],
        count: int,
        selector: selectors.BaseSelector,
    ) -> None:
        self.rng = rng
        self.selector = selector
        self.listeners: dict[socket.socket, int] = {}
        for index, udp in enumerate(sockets[:count]):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind(udp.getsockname())
            except OSError:  # that port is taken for TCP: this source does without
                listener.close()
                continue
            listener.listen(16)
            listener.setblocking(False)
            self.listeners[listener] = index
            selector.register(listener, selectors.EVENT_READ, self)
        self.offers: dict[tuple[int, int], dict[int, int] | None] = {}
        self.requests: dict[socket.socket, tuple[int, bytes]] = {}
        self.held: list[socket.socket] = []
        self.answered = dict.fromkeys(self.WAYS, 0)
        self.wholeSizes: set[int] = set()

    def noteSent(self, index: int, data: bytes) -> None:
        """
        Remember the sizes of the files offered by what source C{index} sent, if it
        offered any. Where the service may see other sizes than we do (the offer reads
        otherwise in UTF-8 and GB18030, or its packet number came before with other
        files), the sizes are unknown (L{None}): such files are never sent whole, more,
        or less, as what would be whole is not known.
        """
        from twisted_udpsuite.ipmsg import wire
        from twisted_udpsuite.ipmsg.wire import MalformedPacket, Mode

        try:
            raw = wire.splitPacket(data)
        except MalformedPacket:
            return
        if raw.command & 0xFF != Mode.SENDMSG or not raw.command & wire.FILEATTACHOPT:
            return
        readings = []
        for encoding in ("utf-8", "gb18030"):
            packet = wire.decodePacket(data, encoding)
            try:
                files = wire.parseAttachments(packet.extra[0]) if packet.extra else []
            except MalformedPacket:
                files = []
            readings.append({a.fileId: a.size for a in files})
        key = (index, raw.packetNo)
        sizes: dict[int, int] | None = readings[0] if readings[0] == readings[1] else None
        if key in self.offers and self.offers[key] != sizes:
            sizes = None
        if len(self.offers) < 100_000:
            self.offers[key] = sizes

    def readable(self, sock: socket.socket) -> None:
        if sock in self.listeners:
            try:
                connection, _ = sock.accept()
            except OSError:
                return
            connection.setblocking(False)
            self.requests[connection] = (self.listeners[sock], b"")
            self.selector.register(connection, selectors.EVENT_READ, self)
            return
        index, request = self.requests[sock]
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        request += data
        if data and b"\0" not in request and len(request) < 8192:
            self.requests[sock] = (index, request)
            return
        del self.requests[sock]
        self.selector.unregister(sock)
        self._answer(sock, index, request)

    def _answer(self, sock: socket.socket, index: int, request: bytes) -> None:
        from twisted_udpsuite.ipmsg import wire
        from twisted_udpsuite.ipmsg.wire import MalformedPacket

        try:
            asked = wire.parseFileRequest(wire.decodePacket(request.rstrip(b"\0")).body)
            sizes = self.offers[(index, asked.packetNo)]
            size = sizes[asked.fileId] if sizes is not None else None
        except (MalformedPacket, KeyError, IndexError):
            asked, size = None, 0
        # Garbage only where no file was offered: a part of an offered file kept for a
        # resume holds nothing but the PATTERN, so whatever is published must match it.
        if asked is None:
            way = "garbage"
        elif size is None:
            way, size = self.rng.choice(self.FOR_OFFERED[3:]), 0
        else:
            way = self.rng.choice(self.FOR_OFFERED)
        if way in ("whole", "long") and size + 5000 > len(PATTERN):
            way = "short"
        self.answered[way] += 1
        offset = asked.offset if asked is not None else 0
        data = b""
        if way == "whole":
            data = PATTERN[offset:size]
            self.wholeSizes.add(size)
        elif way == "short":
            cut = self.rng.randrange(max(min(size - offset, 1 << 20), 1))
            data = PATTERN[offset : offset + cut]
        elif way == "long":
            data = PATTERN[offset : size + self.rng.randrange(1, 5000)]
        elif way == "garbage":
            data = self.rng.randbytes(self.rng.randrange(1, 5000))
        elif way == "hold":
            self.held.append(sock)
            return
        try:
            if data:
                sock.settimeout(2)
                sock.sendall(data)
            if way == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def close(self) -> dict[str, Any]:
        for sock in [*self.listeners, *self.requests, *self.held]:
            sock.close()
        return {"answered": self.answered, "wholeSizes": sorted(self.wholeSizes)}


def fuzzUDP(plan: dict[str, Any], rng: random.Random, corpus: list[bytes]) -> dict[str, Any]:
    target = (plan["target"][0], plan["target"][1])
    sockets = []
    for n in range(plan["sources"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"127.0.{2 + n // 250}.{1 + n % 250}", 0))
        sock.setblocking(False)
        sockets.append(sock)
    sent = [0] * len(sockets)
    received = [0] * len(sockets)
    joined = [False] * len(sockets)
    # IPMsg: the datagrams each source got, and the most it was promised.
    answers = [0] * len(sockets)
    allowed = [0] * len(sockets)
    largest = 0
    selector = selectors.DefaultSelector()  # select() takes no descriptor above 1023
    for index, sock in enumerate(sockets):
        selector.register(sock, selectors.EVENT_READ, index)
    senders = FileSenders(rng, sockets, plan.get("fileSenders", 0), selector)
    others: list[tuple[str, int]] = []  # ports that answered besides the target's
    inputs = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < plan["seconds"]:
        while inputs < elapsed * plan["rate"]:
            index = inputs % len(sockets)
            data = generate(rng, corpus)
            to = target if not others or rng.random() < 0.7 else rng.choice(others)
            try:
                sockets[index].sendto(data, to)
            except OSError:  # too long, or a full buffer: the next one
                pass
            else:
                sent[index] += len(data)
                joined[index] = joined[index] or b"JOIN" in data
                if "attempts" in plan:
                    allowed[index] += ipmsgAnswersAllowed(data, plan["attempts"])
                    senders.noteSent(index, data)
            inputs += 1
        for key, _ in selector.select(0.002):
            if key.data is senders:
                senders.readable(key.fileobj)
                continue
            index, sock = key.data, sockets[key.data]
            while True:
                try:
                    data, source = sock.recvfrom(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                received[index] += len(data)
                answers[index] += 1
                largest = max(largest, len(data))
                if "attempts" in plan and (ack := ipmsgAcknowledgement(rng, data)) is not None:
                    sock.sendto(ack, source)
                    sent[index] += len(ack)
                if source != target and source not in others:
                    others.append(source)
                    del others[:-64]
    time.sleep(0.3)
    for index, sock in enumerate(sockets):
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            received[index] += len(data)
            answers[index] += 1
            largest = max(largest, len(data))
        sock.close()
    fileSenders = senders.close()
    selector.close()
    quiet = [i for i in range(len(sockets)) if not joined[i]]  # never asked to be a member
    return {
        "inputs": inputs,
        "bytesSent": sum(sent),
        "bytesReceived": sum(received),
        "worstRatio": max((received[i] / max(sent[i], 1) for i in quiet), default=0.0),
        "nonMemberBytesSent": sum(sent[i] for i in quiet),
        "nonMemberBytesReceived": sum(received[i] for i in quiet),
        "datagramsReceived": sum(answers),
        "largestReceived": largest,
        "sourcesAnsweredBeyondPromise": [
            (i, answers[i], allowed[i]) for i in range(len(sockets)) if answers[i] > allowed[i]
        ][:10],
        "sourcesGettingMoreBytes": sum(received[i] > sent[i] for i in range(len(sockets))),
        "fileSenders": fileSenders,
    }


def fuzzTCP(plan: dict[str, Any], rng: random.Random, corpus: list[bytes]) -> dict[str, Any]:
    target = (plan["target"][0], plan["target"][1])
    inputs = connections = refused = 0
    sentBytes = receivedBytes = 0
    started = time.monotonic()
    while time.monotonic() - started < plan["seconds"]:
        try:
            sock = socket.create_connection(target, timeout=1)
        except OSError:
            refused += 1
            time.sleep(0.01)
            continue
        connections += 1
        try:
            stream = b"".join(generate(rng, corpus) for _ in range(rng.randrange(1, 5)))
            inputs += 1
            while stream:
                cut = rng.randrange(1, 512)
                piece, stream = stream[:cut], stream[cut:]
                sock.sendall(piece)
                sentBytes += len(piece)
            sock.settimeout(0.05)
            for _ in range(40):
                data = sock.recv(1 << 16)
                if not data:
                    break
                receivedBytes += len(data)
        except OSError:
            pass
        finally:
            if rng.random() < 0.3:  # a reset instead of a close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    return {
        "inputs": inputs,
        "connections": connections,
        "refused": refused,
        "bytesSent": sentBytes,
        "bytesReceived": receivedBytes,
    }


def fuzz(plan: dict[str, Any]) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket or two per source
    wanted = 2 * plan.get("sources", 0) + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    rng = random.Random(plan["seed"])
    corpus = CORPORA[plan["service"]](plan["names"])
    if plan["service"] == "ipmsg-files":
        corpus += offeredRequests((plan["target"][0], plan["target"][1]))
    if KINDS.get(plan["service"]) == "udp":
        return fuzzUDP(plan, rng, corpus)
    return fuzzTCP(plan, rng, corpus)


if __name__ == "__main__":
    result = fuzz(json.loads(Path(sys.argv[1]).read_text()))
    sys.stdout.write(json.dumps(result) + "\n")
