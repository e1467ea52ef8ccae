"""
C{twistd -n udpsuite ipmsg}: a headless IP Messenger member of the LAN.

What an admin runs it for: a drop box and a notice board reader.  It appears in
everyone's IP Messenger, FeiQ or iptux list under C{--nick} and C{--group},
acknowledges and logs every message it gets (one log line each), and, only
with C{--accept-files}, fetches files people send it into C{--root} (each
published whole, never over an existing file).  With C{--share DIR} it also
offers the files in DIR to an iptux user who asks for its shared files.

It is not started by a plain C{twistd -n udpsuite}: it broadcasts its presence
to the whole LAN at start, and it takes port 2425, which a desktop IP Messenger
on the same machine needs; both should be asked for by name.

Sockets: UDP and TCP 2425, both L{Listener}s named C{ipmsg} (bound while
privileged, or adopted from systemd: sockets named C{ipmsg}, or C{ipmsg-udp}
and C{ipmsg-tcp}, as for echo).
"""

from __future__ import annotations

import codecs
import os
import socket
from typing import Any

from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.ipmsg.files import FetchResult, FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.peer import (
    IPMSG_PORT,
    MAX_INBOUND,
    IIPMsgObserver,
    IPMsgPeer,
    Message,
    PeerInfo,
    expandHosts,
)
from twisted_udpsuite.ipmsg.wire import Attachment
from twisted_udpsuite.paths import UnsafePath, safeDescendant
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    Offer,
    ServiceOptions,
    ServiceSpec,
    numberOption,
)
from twisted_udpsuite.terminal import printable

__all__ = ["DropBox", "IPMsgService", "Options", "SPEC", "makeService"]

#: How many names "NAME (n).ext" are tried before a file is refused.
_MAX_RENAMES = 100


def _safe(text: str) -> str:
    return printable(text.encode("utf-8"))


@implementer(IIPMsgObserver)
class DropBox:
    """
    Logs messages and presence; with C{root}, fetches offered files into it.

    @param maxFileSize: larger offers are refused (C{None}: no limit).
    @param maxFetches: how many files are fetched at once; an offer past it is refused
        (one offer may list hundreds of files, each its own TCP connection).
    @ivar received: the files fetched.
    @ivar fetching: the paths of the fetches under way (each file its own name, and so
        its own part file, even when several of one name come at once).
    """

    log = Logger(namespace="twisted_udpsuite.ipmsg")

    def __init__(self, peer: IPMsgPeer, root: FilePath[str] | None = None,
                 maxFileSize: int | None = None, maxFetches: int = 16) -> None:  # fmt: skip
        self.peer = peer
        self.root = root
        self.maxFileSize = maxFileSize
        self.maxFetches = maxFetches
        self.received: list[FetchResult] = []
        self.fetching: set[str] = set()

    def peerJoined(self, peer: PeerInfo) -> None:
        self.log.info("ipmsg: {peer} joined", peer=_safe(peer.describe()))

    def peerChanged(self, peer: PeerInfo) -> None:
        self.log.info("ipmsg: {peer} changed", peer=_safe(peer.describe()))

    def peerLeft(self, peer: PeerInfo, reason: str) -> None:
        self.log.info("ipmsg: {peer} left ({reason})", peer=_safe(peer.describe()), reason=reason)

    def messageOpened(self, peer: PeerInfo, packetNo: int) -> None:
        pass

    def messageReceived(self, message: Message) -> None:
        files = ", ".join(f"{a.name} ({a.size} bytes)" for a in message.attachments)
        self.log.info(
            "ipmsg message from {sender}: {text}{files}",
            ipmsgMessage=True,
            peer=message.peer.address,
            sender=_safe(message.peer.describe()),
            text=_safe(message.text),
            files=f" [files: {_safe(files)}]" if files else "",
            sealed=message.sealed,
        )
        if message.sealed:
            self.peer.markRead(message).addErrback(lambda f: None)
        for attachment in message.attachments:
            self._take(message, attachment)

    def _take(self, message: Message, attachment: Attachment) -> None:
        sender = message.peer.address[0]
        if self.root is None:
            self.log.info("ipmsg: not fetching {file} from {peer} (no --accept-files)",
                          file=_safe(attachment.name), peer=sender)  # fmt: skip
            return
        reason = None
        if attachment.kind != Attachment.REGULAR:
            reason = "not a regular file"
        elif self.maxFileSize is not None and attachment.size > self.maxFileSize:
            reason = f"larger than {self.maxFileSize} bytes"
        elif len(self.fetching) >= self.maxFetches:
            reason = f"{len(self.fetching)} files are being fetched already"
        target = None if reason else self._target(attachment.name)
        if target is None:
            self.log.info("ipmsg: refused {file} from {peer}: {reason}",
                          file=_safe(attachment.name), peer=sender,
                          reason=reason or "unsafe name, or too many of that name")  # fmt: skip
            return
        started = self.peer._reactor.seconds()

        def done(result: FetchResult) -> None:
            self.received.append(result)
            self.log.info("ipmsg received {file} from {peer}: {bytes} bytes, completed",
                          service="ipmsg", peer=sender, file=result.path.basename(),
                          bytes=result.size, outcome="completed",
                          duration=self.peer._reactor.seconds() - started)  # fmt: skip

        def failed(failure: Any) -> None:
            self.log.info("ipmsg: fetching {file} from {peer} failed: {reason}",
                          service="ipmsg", peer=sender, file=_safe(attachment.name),
                          outcome="failed", reason=failure.getErrorMessage())  # fmt: skip

        try:
            d = self.peer.fetchAttachment(message, attachment, target)
        except (OSError, ValueError) as e:
            self.log.info("ipmsg: cannot fetch {file}: {error}", file=_safe(attachment.name),
                          error=e)  # fmt: skip
            return
        self.fetching.add(target.path)
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self.fetching.discard(target.path))

    def _target(self, name: str) -> FilePath[str] | None:
        """A free path in the root for C{name}: C{NAME}, else C{NAME (1).ext}... ."""
        assert self.root is not None
        stem, ext = os.path.splitext(name)
        for n in range(_MAX_RENAMES):
            candidate = name if n == 0 else f"{stem} ({n}){ext}"
            try:
                path = safeDescendant(self.root, candidate)
            except UnsafePath:
                return None
            if "/" in candidate or path.parent() != FilePath(os.path.realpath(self.root.path)):
                return None
            if not os.path.lexists(path.path) and path.path not in self.fetching:
                return path
        return None


class IPMsgService(ListeningService):
    """
    An L{IPMsgPeer} on UDP C{port} and its file server on TCP C{port}, with a
    L{DropBox} observing it.  Stopping says goodbye (BR_EXIT) before the
    ports close.

    @ivar peer: the protocol (add observers, send messages through it).
    """

    def __init__(
        self,
        nick: str,
        group: str = "",
        port: int = IPMSG_PORT,
        interface: str = "",
        reactor: IReactorNetwork | None = None,
        *,
        root: FilePath[str] | None = None,
        acceptFiles: bool = False,
        maxFileSize: int | None = None,
        share: FilePath[str] | None = None,
        hostList: list[str] | None = None,
        encoding: str | None = None,
        peer: IPMsgPeer | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.offers = FileOffers(reactor, root=share)
        self.peer = peer or IPMsgPeer(
            nick, group, reactor, port=port if port else IPMSG_PORT, hostList=hostList or (),
            encoding=encoding, offers=self.offers,
        )  # fmt: skip
        if share is not None:
            self.peer.sharedFiles = lambda: _sharedFiles(share)
        self.files = FileServerFactory(self.offers, reactor)
        self.dropBox = DropBox(self.peer, root if acceptFiles else None, maxFileSize)
        self.peer.addObserver(self.dropBox)
        super().__init__(
            [
                Listener("ipmsg", "udp", port, self.peer, interface, MAX_INBOUND + 1,
                         label="ipmsg", detail=f", as {_safe(nick)!r}"),
                Listener("ipmsg", "tcp", port, self.files, interface, followsPrevious=True,
                         label="ipmsg files"),
            ],
            reactor,
        )  # fmt: skip

    def stopService(self) -> Any:
        self.peer.leave()
        return super().stopService()


def _sharedFiles(directory: FilePath[str]) -> list[FilePath[str]]:
    """The regular files directly in C{directory} (at most 64, by name)."""
    try:
        children = sorted(directory.children(), key=lambda p: p.basename())
    except OSError:
        return []
    return [p for p in children if p.isfile() and not p.basename().startswith(".")][:64]


class MemberOptions(usage.Options):
    """
    What C{twistd udpsuite ipmsg} and C{udpsuite ipmsg} share: C{--host} (repeatable)
    and C{--encoding} (C{auto} becomes C{None}), checked by L{checkMember}.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["host"] = []

    def opt_host(self, value: str) -> None:
        """Also announce to ADDR (or a network of at most 256) by unicast; repeatable."""
        self["host"].append(value)

    def checkMember(self) -> None:
        """Check C{--encoding} and C{--host}; called from C{postOptions}."""
        if self["encoding"] == "auto":
            self["encoding"] = None
        else:
            try:
                codecs.lookup(self["encoding"])
            except LookupError:
                raise usage.UsageError(f"--encoding: unknown {self['encoding']!r}") from None
        try:
            expandHosts(self["host"])
        except ValueError as e:
            raise usage.UsageError(f"--host: {e}") from None


class Options(MemberOptions, ServiceOptions):
    """C{twistd -n udpsuite ipmsg}: a headless IP Messenger member (drop box)."""

    defaultPort = IPMSG_PORT
    optParameters = [
        ["nick", "n", None, "Name shown in everyone's list (default: this host's name)."],
        ["group", "g", "", "Group shown next to the name."],
        ["root", "r", None, "Directory that received files go to (with --accept-files)."],
        ["share", None, None, "Offer the files in this directory to iptux users who ask."],
        ["encoding", "e", "auto", "Code page of peers without UTF-8 (auto: UTF-8 or GB18030)."],
        [
            "max-file-size",
            None,
            1 << 30,
            "Refuse offered files larger than this many bytes.",
            numberOption("max-file-size", int, low=0),
        ],
    ]
    optFlags = [["accept-files", None, "Fetch files people send into --root."]]

    def postOptions(self) -> None:
        if self["nick"] is None:
            self["nick"] = socket.gethostname()
        for name in ("root", "share"):
            if self[name] is not None:
                path = FilePath(self[name])
                if not path.isdir():
                    raise usage.UsageError(f"--{name}: {self[name]!r} is not a directory")
                self[name] = path
        if self["accept-files"] and self["root"] is None:
            raise usage.UsageError("--accept-files needs --root DIR")
        self.checkMember()


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> IPMsgService:
    """Build the IPMsg service from parsed L{Options}."""
    return IPMsgService(
        options["nick"], options["group"], options["port"], options["interface"], reactor,
        root=options["root"], acceptFiles=options["accept-files"],
        maxFileSize=options["max-file-size"], share=options["share"],
        hostList=options["host"], encoding=options["encoding"],
    )  # fmt: skip


SPEC = ServiceSpec(
    "ipmsg",
    "Headless IP Messenger/FeiQ/iptux member: logs messages, drop box (not started by default)",
    Options,
    makeService,
    startsByDefault=False,
    offers=(Offer("ipmsg", "udp"),),
)
