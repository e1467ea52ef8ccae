"""
The IPMsg member of the LAN: an L{IPMsgPeer} C{DatagramProtocol} on UDP 2425.

Presence: at start it broadcasts BR_ENTRY (and unicasts it, with DIALUPOPT, to
a configured host list that broadcasts do not reach); every other member
answers ANSENTRY, as it answers theirs, after a random delay that grows with
the size of the LAN (IP Messenger's reply-storm rule).  BR_ABSENCE announces an
away status, BR_EXIT leaving.  The peer table (L{PeerInfo}) is bounded, and an
entry not heard from for C{peerLifetime} seconds is forgotten.

Messages: L{IPMsgPeer.sendMessage} sends SENDMSG|SENDCHECKOPT and fires when
the RECVMSG comes, retrying (with RETRYOPT) every C{retryInterval} seconds up to
C{attempts} times, then fails with L{NotAcknowledged}.  An incoming message is
acknowledged (unless it carries BROADCASTOPT or AUTORETOPT, which would start
ping-pong), and a duplicate (same address and packet number) is acknowledged
again but shown once.  Sealed messages are answered by READMSG when opened
(L{IPMsgPeer.markRead}), GETINFO by SENDINFO, GETABSENCEINFO by
SENDABSENCEINFO.

Defence: a datagram from an address that is no host's (broadcast, multicast,
this host's subnet broadcasts: L{isUnanswerableSource}) is dropped unread, each
source address has a token bucket, every table is bounded, and nothing longer
than L{wire.MAX_DATAGRAM} is sent.

Sockets: everything IPMsg does happens on port 2425 (peers such as iptux answer
only to 2425, whatever the source port), so there is one socket.  It holds
C{SO_BROADCAST} only I{while} the presence broadcast is written (set, write,
cleared, in one synchronous call of the single-threaded reactor): at every other
moment, in particular whenever an answer is written, the kernel itself refuses
a broadcast destination (C{EACCES}).  Answers are also never addressed to an
unanswerable address in the first place.
"""

from __future__ import annotations

import codecs
import getpass
import ipaddress
import random
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import Interface, implementer

from twisted_udpsuite import __version__, ports
from twisted_udpsuite.addresses import hostOf, isUnanswerableSource
from twisted_udpsuite.command import showAddress
from twisted_udpsuite.discovery.interfaces import broadcastInterfaces, directedBroadcasts
from twisted_udpsuite.ipmsg import files, wire
from twisted_udpsuite.ipmsg.wire import (
    Attachment,
    EntryInfo,
    MalformedPacket,
    Mode,
    Packet,
    PacketNumbers,
)
from twisted_udpsuite.ratelimit import PerSourceLimiter
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr

__all__ = [
    "IPMSG_PORT",
    "IIPMsgObserver",
    "IPMsgPeer",
    "Message",
    "MessageTooLong",
    "NotAcknowledged",
    "PeerInfo",
    "PeerStats",
    "RecordingObserver",
]

Address = tuple[str, int]

IPMSG_PORT = ports.IPMSG
#: Our version field: "1", then who we are (as iptux and FeiQ add theirs).
VERSION = f"1_udpsuite {__version__}"
#: Datagrams longer than this are not read (IP Messenger's own receive buffer).
MAX_INBOUND = 32768
#: What we can do, said in every entry packet.
FEATURES = wire.FILEATTACHOPT | wire.CAPUTF8OPT


class NotAcknowledged(Exception):
    """The peer never acknowledged the message (it may be offline)."""


class MessageTooLong(ValueError):
    """The message does not fit in one datagram of at most L{wire.MAX_DATAGRAM} bytes."""


@dataclass
class PeerInfo:
    """
    One member of the LAN, as its packets describe it.

    @ivar encoding: the code page of its packets without UTF8OPT (C{None}: guess
        each time); learnt from iptux's entry, or from how its entry decoded.
    @ivar features: the option bits of its last entry (CAPUTF8OPT, FILEATTACHOPT...).
    """

    address: Address
    nick: str
    group: str = ""
    user: str = ""
    host: str = ""
    version: str = "1"
    encoding: str | None = None
    features: int = 0
    absent: bool = False
    lastSeen: float = 0.0

    @property
    def utf8(self) -> bool:
        return bool(self.features & wire.CAPUTF8OPT)

    @property
    def isIptux(self) -> bool:
        return "iptux" in self.version

    def describe(self) -> str:
        where = self.address[0] if self.address[1] == IPMSG_PORT else showAddress(*self.address)
        group = f" ({self.group})" if self.group else ""
        away = " [away]" if self.absent else ""
        return f"{self.nick}{group} at {where}{away}"


@dataclass(frozen=True)
class Message:
    """
    A message received.

    @ivar sealed: SECRETOPT: to be opened by the user (then L{IPMsgPeer.markRead}).
    @ivar readCheck: READCHECKOPT: the sender wants to hear when it is opened.
    @ivar attachments: the files offered with it (fetch them with
        L{IPMsgPeer.fetchAttachment}).
    """

    peer: PeerInfo
    packetNo: int
    text: str
    sealed: bool = False
    readCheck: bool = False
    autoReply: bool = False
    broadcast: bool = False
    attachments: tuple[Attachment, ...] = ()
    receivedAt: float = 0.0


class IIPMsgObserver(Interface):
    """What an L{IPMsgPeer} tells the application (a terminal, a service, a bot)."""

    def peerJoined(peer: PeerInfo) -> None:
        """A new member entered the table."""

    def peerChanged(peer: PeerInfo) -> None:
        """A member's nick, group or absence changed."""

    def peerLeft(peer: PeerInfo, reason: str) -> None:
        """A member left the table: C{"exit"}, C{"expired"} or C{"evicted"}."""

    def messageReceived(message: Message) -> None:
        """A new message (duplicates are not passed on)."""

    def messageOpened(peer: PeerInfo, packetNo: int) -> None:
        """C{peer} opened the sealed message C{packetNo} we sent."""


@implementer(IIPMsgObserver)
class RecordingObserver:
    """An L{IIPMsgObserver} that keeps what happened in lists (tests, bots)."""

    def __init__(self) -> None:
        self.joined: list[PeerInfo] = []
        self.changed: list[PeerInfo] = []
        self.left: list[tuple[PeerInfo, str]] = []
        self.messages: list[Message] = []
        self.opened: list[tuple[PeerInfo, int]] = []

    def peerJoined(self, peer: PeerInfo) -> None:
        self.joined.append(peer)

    def peerChanged(self, peer: PeerInfo) -> None:
        self.changed.append(peer)

    def peerLeft(self, peer: PeerInfo, reason: str) -> None:
        self.left.append((peer, reason))

    def messageReceived(self, message: Message) -> None:
        self.messages.append(message)

    def messageOpened(self, peer: PeerInfo, packetNo: int) -> None:
        self.opened.append((peer, packetNo))


@dataclass
class PeerStats:
    """What an L{IPMsgPeer} did, for logs, metrics and tests."""

    messagesIn: int = 0
    messagesOut: int = 0
    acknowledged: int = 0
    unacknowledged: int = 0
    answers: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


@dataclass
class _Outgoing:
    """A packet sent until a matching answer comes (RECVMSG, ANSREADMSG)."""

    deferred: Deferred[int]
    packet: Packet
    address: Address
    answer: int  # the mode that ends it
    left: int
    timer: Any = None


def _localNames() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except Exception:
        user = "udpsuite"
    return user, socket.gethostname()


def _clean(text: str, limit: int = wire.MAX_NAME) -> str:
    """A user or host name fit for the header: no colons, no NUL, not too long."""
    return text.replace(":", ";").replace("\0", "")[:limit] or "?"


@implementer(IIPMsgObserver)
class _Observers:
    """Fans each event out to every observer; one that raises does not stop the others."""

    log = Logger(namespace="twisted_udpsuite.ipmsg")

    def __init__(self) -> None:
        self.observers: list[IIPMsgObserver] = []

    def _each(self, method: str, *args: Any) -> None:
        for observer in list(self.observers):
            with self.log.failuresHandled("in an IPMsg observer's {method}", method=method):
                getattr(observer, method)(*args)

    def peerJoined(self, peer: PeerInfo) -> None:
        self._each("peerJoined", peer)

    def peerChanged(self, peer: PeerInfo) -> None:
        self._each("peerChanged", peer)

    def peerLeft(self, peer: PeerInfo, reason: str) -> None:
        self._each("peerLeft", peer, reason)

    def messageReceived(self, message: Message) -> None:
        self._each("messageReceived", message)

    def messageOpened(self, peer: PeerInfo, packetNo: int) -> None:
        self._each("messageOpened", peer, packetNo)


class IPMsgPeer(DatagramProtocol):
    """
    A member of an IP Messenger LAN (IP Messenger, FeiQ, iptux).

    Listen on UDP 2425 on all interfaces to hear broadcasts.  Offering files
    needs an L{twisted_udpsuite.ipmsg.files.FileOffers} (C{offers}), served on
    TCP 2425 by L{twisted_udpsuite.ipmsg.files.FileServerFactory}.

    @param nick: shown to the others.
    @param encoding: the code page for peers that do not do UTF-8, and of our
        broadcasts; C{None} (auto) guesses each peer's (UTF-8 or GB18030) and
        broadcasts in GB18030 (which is GBK for the characters GBK has).
    @param broadcastTargets: where BR_ENTRY goes; C{None}: 255.255.255.255 and
        each interface's directed broadcast.
    @param hostList: addresses (or networks of at most 256 addresses) to send
        BR_ENTRY to by unicast, for peers that broadcasts do not reach.
    @param peerLifetime: seconds after which a silent peer is forgotten.
    @param rate: datagrams per second taken from one source address (C{burst} at once).
    @param maxUnanswered: how many of our packets may wait for an answer at once
        (messages, READMSGs, offers to an ASKSHARED); past it a new one fails at once with
        L{NotAcknowledged}, so that a flood of sealed messages or ASKSHAREDs from many
        sources cannot grow the retry table without bound.
    @param random: the source of the ANSENTRY delays (seed it in tests).
    @ivar peers: the table, by address, least recently heard first.
    """

    log = Logger(namespace="twisted_udpsuite.ipmsg")
    noisy = False

    def __init__(
        self,
        nick: str,
        group: str = "",
        reactor: IReactorNetwork | None = None,
        *,
        user: str | None = None,
        host: str | None = None,
        encoding: str | None = None,
        port: int = IPMSG_PORT,
        broadcastTargets: Sequence[str] | None = None,
        hostList: Iterable[str] = (),
        maxPeers: int = 1024,
        peerLifetime: float = 6 * 3600.0,
        rate: float = 20.0,
        burst: float = 40.0,
        retryInterval: float = 0.75,
        attempts: int = 6,
        maxSeen: int = 2048,
        maxPending: int = 256,
        maxUnanswered: int = 1024,
        random: random.Random | None = None,
        offers: Any = None,
        broadcasts: Any = None,
    ) -> None:
        if encoding is not None:
            codecs.lookup(encoding)
        localUser, localHost = _localNames()
        self._reactor = reactorOr(reactor)
        # At most 80 characters each (IP Messenger's name buffer), so entries stay small.
        self.nick = nick.replace("\0", "")[: wire.MAX_NAME] or "?"
        self.group = group.replace("\0", "")[: wire.MAX_NAME]
        self.user = _clean(user if user is not None else localUser)
        self.host = _clean(host if host is not None else localHost)
        self.encoding = encoding
        self.port = port
        self.broadcastTargets = list(broadcastTargets) if broadcastTargets is not None else None
        self.hostList = expandHosts(hostList)
        self.maxPeers = maxPeers
        self.peerLifetime = peerLifetime
        self.retryInterval = retryInterval
        self.attempts = attempts
        self.maxSeen = maxSeen
        self.maxPending = maxPending
        self.maxUnanswered = maxUnanswered
        self.offers = offers
        #: The files to offer an iptux user who asks for our shared files (None: none).
        self.sharedFiles: Callable[[], list[FilePath[str]]] | None = None
        self.absence: str | None = None
        self._left = False
        self.stats = PeerStats()
        self.peers: OrderedDict[Address, PeerInfo] = OrderedDict()
        self.numbers = PacketNumbers(self._reactor.seconds)
        self._random = random if random is not None else _systemRandom()
        self._limiter = PerSourceLimiter(self._reactor, rate, burst)
        self._broadcasts = broadcasts  # the local subnets' broadcasts (None: the kernel's)
        self._seen: OrderedDict[tuple[str, int, int], None] = OrderedDict()
        self._mine: OrderedDict[int, None] = OrderedDict()
        self._answers: dict[Address, Any] = {}
        self._outgoing: dict[tuple[int, int], _Outgoing] = {}
        self._observers = _Observers()

    # Observers

    def addObserver(self, observer: IIPMsgObserver) -> None:
        """Tell C{observer} about messages and presence from now on."""
        self._observers.observers.append(observer)

    def removeObserver(self, observer: IIPMsgObserver) -> None:
        self._observers.observers.remove(observer)

    # Lifecycle

    def startProtocol(self) -> None:
        self.announce()

    def stopProtocol(self) -> None:
        for call in self._answers.values():
            if call.active():
                call.cancel()
        self._answers.clear()
        for key in list(self._outgoing):
            stopped = NotAcknowledged("stopped before the answer came")
            self._finish(key, Failure(stopped))  # type: ignore[no-untyped-call]

    def announce(self) -> None:
        """Broadcast BR_ENTRY (and unicast it to the host list): "here I am, who is there?"."""
        self._left = False
        self._toEveryone(self._entryPacket(Mode.BR_ENTRY))

    def setAbsence(self, text: str | None) -> None:
        """Go away (C{text}: why) or, with C{None}, come back; tells everyone (BR_ABSENCE)."""
        self.absence = text
        self._toEveryone(self._entryPacket(Mode.BR_ABSENCE))

    def _toEveryone(self, packet: Packet) -> None:
        """Broadcast C{packet}, and unicast it with DIALUPOPT to the host list."""
        self._broadcast(packet)
        dialup = replace(packet, command=packet.command | wire.DIALUPOPT)
        for target in self.hostList:
            self._send(dialup, (target, self.port))

    def leave(self) -> None:
        """
        Say goodbye: broadcast BR_EXIT and unicast it to every known peer (iptux
        leaves this way), then forget the table.  Call it before the port closes;
        a second call does nothing (until L{announce}).
        """
        if self.transport is None or self._left:
            return
        self._left = True
        goodbye = self._packet(Mode.BR_EXIT, self.nick, extra=(self.group,), legacy=True)
        self._toEveryone(goodbye)
        for address in list(self.peers):
            if address[0] not in self.hostList:
                self._send(goodbye, address)
        self.peers.clear()

    # The table

    def peerList(self) -> list[PeerInfo]:
        """The live table (silent peers past their lifetime dropped), by nick."""
        self._expire()
        return sorted(self.peers.values(), key=lambda p: (p.nick.lower(), p.address))

    def findPeers(self, name: str) -> list[PeerInfo]:
        """The peers whose nick, user, host or address is C{name} (case-insensitive)."""
        wanted = name.lower()
        found = []
        for peer in self.peerList():
            keys = {peer.nick.lower(), peer.user.lower(), peer.host.lower(), peer.address[0]}
            if wanted in keys or wanted == showAddress(*peer.address):
                found.append(peer)
        return found

    def _expire(self) -> None:
        deadline = self._reactor.seconds() - self.peerLifetime
        while self.peers:
            address, oldest = next(iter(self.peers.items()))
            if oldest.lastSeen > deadline:
                break
            del self.peers[address]
            self._observers.peerLeft(oldest, "expired")

    def _remember(self, packet: Packet, address: Address, entry: bool) -> PeerInfo:
        """Add or refresh the sender of C{packet}; from an entry, take its nick and group."""
        self._expire()
        now = self._reactor.seconds()
        peer = self.peers.get(address)
        isNew = peer is None
        if peer is None:
            if len(self.peers) >= self.maxPeers:
                _, evicted = self.peers.popitem(last=False)
                self._observers.peerLeft(evicted, "evicted")
            peer = PeerInfo(address, packet.user, user=packet.user, host=packet.host)
            self.peers[address] = peer
        else:
            self.peers.move_to_end(address)
        peer.lastSeen = now
        peer.version = packet.version
        before = (peer.nick, peer.group, peer.absent)
        if entry:
            info = EntryInfo.fromPacket(packet)
            peer.nick, peer.group = info.nick[: wire.MAX_NAME], info.group[: wire.MAX_NAME]
            peer.user, peer.host = info.user[: wire.MAX_NAME], info.host[: wire.MAX_NAME]
            peer.features = packet.options
            peer.absent = packet.has(wire.ABSENCEOPT) and not _isIptux(packet)
            peer.encoding = _declaredEncoding(packet) or (
                None if packet.has(wire.UTF8OPT) else packet.encoding
            )
        elif peer.encoding is None and packet.encoding != "utf-8" and not packet.has(wire.UTF8OPT):
            peer.encoding = packet.encoding  # its text proved not to be UTF-8
        if isNew:
            self._observers.peerJoined(peer)
        elif (peer.nick, peer.group, peer.absent) != before:
            self._observers.peerChanged(peer)
        return peer

    # Receiving

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        try:
            self._received(data, addr)
        except Exception:
            self.log.failure("while handling a datagram from {source}", source=addr)

    def _received(self, data: bytes, addr: Address) -> None:
        address = (hostOf(addr[0]), addr[1])
        if len(data) > MAX_INBOUND:
            self.stats.drop("too-long")
            return
        if isUnanswerableSource(address[0], self._broadcasts):
            self.stats.drop("source")
            return
        if not self._limiter.allow(address[0]):
            self.stats.drop("rate")
            return
        known = self.peers.get(address)
        try:
            packet = wire.decodePacket(data, known.encoding if known else self.encoding)
        except MalformedPacket as e:
            self.stats.drop("malformed")
            self.log.debug("not an IPMsg packet from {source}: {error}", source=addr, error=e)
            return
        if self._isOwn(packet, addr):
            return  # our own broadcast, looped back
        handler = self._handlers.get(packet.mode)
        if handler is None:
            self.stats.drop("unknown-command")
            return
        handler(self, packet, address)

    def _isOwn(self, packet: Packet, addr: Address) -> bool:
        """
        Our own packet (Linux loops a broadcast back to its sender): our user, host,
        a packet number we used, from our port.  Two peers of one user in one
        process still hear each other: their ports differ.
        """
        return (
            packet.packetNo in self._mine
            and packet.user == self.user
            and packet.host == self.host
            and self.transport is not None
            and addr[1] == self.transport.getHost().port
        )

    def _onEntry(self, packet: Packet, address: Address) -> None:
        self._remember(packet, address, entry=True)
        self._answerLater(address)

    def _onAnswerEntry(self, packet: Packet, address: Address) -> None:
        self._remember(packet, address, entry=True)

    def _onExit(self, packet: Packet, address: Address) -> None:
        peer = self.peers.pop(address, None)
        pending = self._answers.pop(address, None)
        if pending is not None and pending.active():
            pending.cancel()
        if peer is not None:
            self._observers.peerLeft(peer, "exit")

    def _onMessage(self, packet: Packet, address: Address) -> None:
        noReply = packet.has(wire.BROADCASTOPT) or packet.has(wire.AUTORETOPT)
        if packet.has(wire.SENDCHECKOPT) and not noReply:
            self._answer(Mode.RECVMSG, str(packet.packetNo), address)
        key = (address[0], address[1], packet.packetNo)
        if key in self._seen:
            self._seen.move_to_end(key)
            self.stats.drop("duplicate")
            return
        self._seen[key] = None
        if len(self._seen) > self.maxSeen:
            self._seen.popitem(last=False)
        if packet.has(wire.NOADDLISTOPT) and address not in self.peers:
            peer = PeerInfo(address, packet.user, user=packet.user, host=packet.host)
        else:
            peer = self._remember(packet, address, entry=False)
        attachments: tuple[Attachment, ...] = ()
        if packet.has(wire.FILEATTACHOPT) and packet.extra:
            try:
                attachments = tuple(wire.parseAttachments(packet.extra[0]))
            except MalformedPacket as e:
                self.log.info("bad file offer from {peer}: {error}", peer=address, error=e)
        self.stats.messagesIn += 1
        self._observers.messageReceived(
            Message(
                peer,
                packet.packetNo,
                packet.body,
                sealed=packet.has(wire.SECRETOPT),
                readCheck=packet.has(wire.READCHECKOPT),
                autoReply=packet.has(wire.AUTORETOPT),
                broadcast=packet.has(wire.BROADCASTOPT),
                attachments=attachments,
                receivedAt=self._reactor.seconds(),
            )
        )

    def _onReceived(self, packet: Packet, address: Address) -> None:
        """RECVMSG (or ANSREADMSG): the body is the packet number answered."""
        number = _bodyNumber(packet.body)
        outgoing = self._outgoing.get((packet.mode, number))
        if outgoing is None and packet.mode == Mode.ANSREADMSG:
            # Some answer READMSG with the opened message's number, not the READMSG's.
            for (mode, sent), candidate in self._outgoing.items():
                if mode == Mode.ANSREADMSG and candidate.packet.body == str(number):
                    number, outgoing = sent, candidate
                    break
        if outgoing is None or outgoing.address[0] != address[0]:
            return
        if packet.mode == Mode.RECVMSG:
            self.stats.acknowledged += 1
        self._finish((packet.mode, number), number)

    def _onRead(self, packet: Packet, address: Address) -> None:
        """READMSG: a sealed message of ours was opened."""
        if packet.has(wire.READCHECKOPT):
            self._answer(Mode.ANSREADMSG, str(packet.packetNo), address)
        key = (address[0], address[1], packet.packetNo)
        if key in self._seen:
            return
        self._seen[key] = None
        peer = self.peers.get(address) or PeerInfo(address, packet.user)
        self._observers.messageOpened(peer, _bodyNumber(packet.body))

    def _onGetInfo(self, packet: Packet, address: Address) -> None:
        self._answer(Mode.SENDINFO, VERSION, address)

    def _onGetAbsenceInfo(self, packet: Packet, address: Address) -> None:
        self._answer(Mode.SENDABSENCEINFO, self.absence or "Not absence mode", address)

    def _onAskShared(self, packet: Packet, address: Address) -> None:
        """iptux's "send me your shared files": offer them, if we share any."""
        if self.sharedFiles is None or self.offers is None:
            return
        shared = self.sharedFiles()
        if shared:
            d = self.offerFiles(self.peers.get(address) or address, shared)
            d.addErrback(lambda f: None)  # an unacknowledged offer is withdrawn

    def _onRelease(self, packet: Packet, address: Address) -> None:
        if self.offers is not None:
            self.offers.release(address[0], _bodyNumber(packet.body))

    _handlers: ClassVar[dict[int, Callable[[IPMsgPeer, Packet, Address], None]]] = {
        Mode.BR_ENTRY: _onEntry,
        Mode.ANSENTRY: _onAnswerEntry,
        Mode.BR_ABSENCE: _onAnswerEntry,
        Mode.BR_EXIT: _onExit,
        Mode.SENDMSG: _onMessage,
        Mode.RECVMSG: _onReceived,
        Mode.ANSREADMSG: _onReceived,
        Mode.READMSG: _onRead,
        Mode.GETINFO: _onGetInfo,
        Mode.GETABSENCEINFO: _onGetAbsenceInfo,
        Mode.RELEASEFILES: _onRelease,
        Mode.IPTUX_ASKSHARED: _onAskShared,
    }

    # Answering

    def _answerLater(self, address: Address) -> None:
        """ANSENTRY after IP Messenger's random delay; one pending answer per peer."""
        if address in self._answers or len(self._answers) >= self.maxPending:
            return
        members = len(self.peers)
        window = 1.023 if members < 50 else 2.047 if members < 300 else 4.095
        delay = self._random.uniform(0, window) + 0.005

        def answer() -> None:
            del self._answers[address]
            self._send(self._entryPacket(Mode.ANSENTRY), address)
            self.stats.answers += 1

        self._answers[address] = self._reactor.callLater(delay, answer)

    def _answer(self, mode: int, body: str, address: Address) -> None:
        self.stats.answers += 1
        self._send(self._packet(mode, body, to=self.peers.get(address)), address)

    # Sending

    def _packet(
        self,
        command: int,
        body: str = "",
        extra: tuple[str, ...] = (),
        to: PeerInfo | None = None,
        legacy: bool = False,
    ) -> Packet:
        """
        A packet of ours, in UTF-8 (with UTF8OPT) for a peer that can read it,
        else in the peer's (or our) code page; C{legacy} forces the code page
        (entries and broadcasts are never UTF8OPT).
        """
        if to is not None and to.utf8 and not legacy:
            command |= wire.UTF8OPT
            encoding = "utf-8"
        else:
            encoding = self.encoding or (to.encoding if to else None) or wire.LEGACY
        number = self.numbers.next()
        self._mine[number] = None
        if len(self._mine) > 256:
            self._mine.popitem(last=False)
        return Packet(VERSION, number, self.user, self.host, command, body, extra, encoding)

    def _entryPacket(self, mode: int) -> Packet:
        command = mode | FEATURES | (wire.ABSENCEOPT if self.absence is not None else 0)
        extension = wire.entryExtension(self.user, self.host, self.nick, self.group)
        return self._packet(command, self.nick, extra=(self.group, extension), legacy=True)

    def _send(self, packet: Packet, address: Address) -> bool:
        """Write one unicast packet; never to an address that is no host's."""
        if self.transport is None:
            return False
        if isUnanswerableSource(address[0], self._broadcasts):
            self.stats.drop("unanswerable-destination")
            return False
        try:
            self.transport.write(packet.toBytes(), self._onSocket(address))
        except Exception as e:
            self.log.debug("cannot send to {target}: {error}", target=address, error=e)
            return False
        return True

    def _onSocket(self, address: Address) -> Address:
        """C{address} as our socket writes it: V4-mapped on an IPv6 (dual-stack) socket."""
        assert self.transport is not None
        if ":" in self.transport.getHost().host and ":" not in address[0]:
            return (f"::ffff:{address[0]}", address[1])
        return address

    def _broadcast(self, packet: Packet) -> None:
        """Write C{packet} to every broadcast target, holding SO_BROADCAST only meanwhile."""
        if self.transport is None:
            return
        data = packet.toBytes()
        self.transport.setBroadcastAllowed(True)
        try:
            for target in self._broadcastTargets():
                try:
                    self.transport.write(data, self._onSocket((target, self.port)))
                except Exception as e:
                    self.log.debug("cannot broadcast to {target}: {error}", target=target, error=e)
        finally:
            self.transport.setBroadcastAllowed(False)

    def _broadcastTargets(self) -> list[str]:
        if self.broadcastTargets is not None:
            return self.broadcastTargets
        assert self.transport is not None
        bound = self.transport.getHost().host
        found = [i for _, i in broadcastInterfaces()]
        if bound not in ("", "0.0.0.0", "::"):
            found = [i for i in found if str(i.ip) == bound]
        return ["255.255.255.255", *directedBroadcasts(found)]

    def sendMessage(
        self,
        to: PeerInfo | Address,
        text: str,
        *,
        sealed: bool = False,
        attachments: Sequence[Attachment] = (),
        packetNo: int | None = None,
    ) -> Deferred[int]:
        """
        Send C{text} to C{to}; the Deferred fires with the packet number once
        the peer acknowledges it (RECVMSG), or fails with L{NotAcknowledged}
        after C{attempts} tries, with L{MessageTooLong} at once if it does not
        fit in a datagram.  Cancelling it stops the retries.

        @param sealed: SECRETOPT|READCHECKOPT: the peer opens it, and we hear so
            (L{IIPMsgObserver.messageOpened}).
        @param attachments: files offered with it (see
            L{twisted_udpsuite.ipmsg.files.FileOffers.add}, which needs the
            packet number: pass the same C{packetNo}).
        """
        peer = to if isinstance(to, PeerInfo) else self.peers.get(to)
        address = to.address if isinstance(to, PeerInfo) else (hostOf(to[0]), to[1])
        command = Mode.SENDMSG | wire.SENDCHECKOPT
        if sealed:
            command |= wire.SECRETOPT | wire.READCHECKOPT
        extra: tuple[str, ...] = ()
        if attachments:
            command |= wire.FILEATTACHOPT
            extra = (wire.encodeAttachments(attachments),)
        packet = self._packet(command, text, extra, to=peer)
        if packetNo is not None:
            packet = replace(packet, packetNo=packetNo)
        try:
            size = len(packet.toBytes())
        except MalformedPacket as e:
            return fail(ValueError(f"cannot send that: {e}"))
        if size > wire.MAX_DATAGRAM:
            return fail(MessageTooLong(f"more than {wire.MAX_DATAGRAM} bytes in one datagram"))
        self.stats.messagesOut += 1
        return self._sendUntilAnswered(packet, address, Mode.RECVMSG)

    def offerFiles(
        self, to: PeerInfo | Address, paths: Sequence[FilePath[str]], text: str = ""
    ) -> Deferred[int]:
        """
        Offer C{paths} to C{to} in a message (SENDMSG|FILEATTACHOPT), served on our
        TCP port from L{offers} to that address only; fires on the peer's ack.  An
        offer that is never acknowledged is withdrawn.

        @raise ValueError: if a path cannot be offered (not a regular file, outside
            the offers' root), or this peer has no L{offers}.
        """
        if self.offers is None:
            raise ValueError("this peer offers no files (no FileOffers given)")
        address = to.address if isinstance(to, PeerInfo) else (hostOf(to[0]), to[1])
        number = self.nextPacketNumber()
        attachments = self.offers.add(address[0], number, paths)
        d = self.sendMessage(to, text, attachments=attachments, packetNo=number)

        def withdraw(failure: Failure) -> Failure:
            self.offers.release(address[0], number)
            return failure

        return d.addErrback(withdraw)

    def fetchAttachment(
        self, message: Message, attachment: Attachment, destination: FilePath[str], **kwargs: Any
    ) -> Deferred[files.FetchResult]:
        """
        Fetch a file offered in C{message} into C{destination} over TCP from the
        sender (see L{files.fetchAttachment} for C{overwrite}, C{progress},
        C{timeout}); a resume continues an earlier attempt, except from iptux.
        """
        header = self._packet(Mode.GETFILEDATA, to=message.peer)
        kwargs.setdefault("resume", not message.peer.isIptux)
        return files.fetchAttachment(
            self._reactor, message.peer.address, message.packetNo, attachment, destination,
            request=header, **kwargs,
        )  # fmt: skip

    def nextPacketNumber(self) -> int:
        """A packet number for a message to come (to register its file offer under)."""
        number = self.numbers.next()
        self._mine[number] = None
        return number

    def markRead(self, message: Message) -> Deferred[int]:
        """
        Tell the sender its sealed C{message} was opened (READMSG).  With
        READCHECKOPT it is retried until the sender answers ANSREADMSG.
        """
        if not message.sealed:
            return succeed(message.packetNo)
        command = Mode.READMSG | (wire.READCHECKOPT if message.readCheck else 0)
        packet = self._packet(command, str(message.packetNo), to=message.peer)
        if not message.readCheck:
            self._send(packet, message.peer.address)
            return succeed(message.packetNo)
        return self._sendUntilAnswered(packet, message.peer.address, Mode.ANSREADMSG)

    def askSharedFiles(self, to: PeerInfo | Address) -> None:
        """
        Ask an iptux peer for the files it shares (iptux's ASKSHARED): they come
        as a message with attachments (L{IIPMsgObserver.messageReceived}).
        """
        peer = to if isinstance(to, PeerInfo) else self.peers.get(to)
        address = to.address if isinstance(to, PeerInfo) else (hostOf(to[0]), to[1])
        self._send(self._packet(Mode.IPTUX_ASKSHARED, to=peer), address)

    def _sendUntilAnswered(self, packet: Packet, address: Address, answer: int) -> Deferred[int]:
        key = (int(answer), packet.packetNo)
        if len(self._outgoing) >= self.maxUnanswered:
            self.stats.drop("unanswered table full")
            return fail(NotAcknowledged(f"{len(self._outgoing)} packets already await an answer"))

        def cancel(d: Deferred[int]) -> None:
            outgoing = self._outgoing.pop(key, None)
            if outgoing is not None and outgoing.timer is not None and outgoing.timer.active():
                outgoing.timer.cancel()

        outgoing = _Outgoing(Deferred(cancel), packet, address, int(answer), self.attempts)
        self._outgoing[key] = outgoing
        self._transmit(key)
        return outgoing.deferred

    def _transmit(self, key: tuple[int, int]) -> None:
        outgoing = self._outgoing.get(key)
        if outgoing is None:
            return
        if outgoing.left <= 0:
            if outgoing.answer == Mode.RECVMSG:
                self.stats.unacknowledged += 1
            tries = self.attempts
            unanswered = NotAcknowledged(f"no answer after {tries} tries")
            self._finish(key, Failure(unanswered))  # type: ignore[no-untyped-call]
            return
        packet = outgoing.packet
        if outgoing.left < self.attempts:
            packet = replace(packet, command=packet.command | wire.RETRYOPT)
        outgoing.left -= 1
        self._send(packet, outgoing.address)
        outgoing.timer = self._reactor.callLater(self.retryInterval, self._transmit, key)

    def _finish(self, key: tuple[int, int], result: int | Failure) -> None:
        outgoing = self._outgoing.pop(key, None)
        if outgoing is None:
            return
        if outgoing.timer is not None and outgoing.timer.active():
            outgoing.timer.cancel()
        if isinstance(result, Failure):
            outgoing.deferred.errback(result)
        else:
            outgoing.deferred.callback(result)


def _bodyNumber(body: str) -> int:
    text = body.strip().strip("\0")
    return int(text) if text.isdigit() and len(text) <= 20 else -1


def _isIptux(packet: Packet) -> bool:
    # iptux sets ABSENCEOPT on every entry, away or not.
    return "iptux" in packet.version


def _declaredEncoding(packet: Packet) -> str | None:
    """iptux's entries end C{group\\0icon\\0encoding}: the code page it writes in."""
    if len(packet.extra) >= 3 and not packet.extra[1].startswith("\n"):
        name = packet.extra[2].strip()
        try:
            return codecs.lookup(name).name if name else None
        except LookupError:
            return None
    return None


def expandHosts(hosts: Iterable[str]) -> list[str]:
    """
    Addresses and small networks (at most 256 addresses) as a list of host addresses.

    @raise ValueError: for what is not an address or network, a network that is
        too big, or an address that is no host's (a broadcast or multicast address).
    """
    out: list[str] = []
    for text in hosts:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from None
        if network.num_addresses > 256:
            raise ValueError(f"{text}: at most 256 addresses (a /24) per network")
        hosts_ = [network.network_address] if network.num_addresses == 1 else network.hosts()
        for ip in hosts_:
            if isUnanswerableSource(str(ip), ()):
                raise ValueError(f"{ip} is not a host's address")
            if str(ip) not in out:
                out.append(str(ip))
    return out


def _systemRandom() -> random.Random:
    return random.SystemRandom()
