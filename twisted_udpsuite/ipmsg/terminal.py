"""
The C{udpsuite ipmsg} terminal: an L{IPMsgPeer} driven from a L{LineTerminal}.

Everything from the network is shown through L{printable}, so a peer's nick,
text or file names cannot drive the terminal.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from twisted_udpsuite.addresses import parseHostPort
from twisted_udpsuite.command import showAddress
from twisted_udpsuite.ipmsg.files import FetchResult
from twisted_udpsuite.ipmsg.peer import (
    IIPMsgObserver,
    IPMsgPeer,
    Message,
    NotAcknowledged,
    PeerInfo,
)
from twisted_udpsuite.ipmsg.wire import Attachment
from twisted_udpsuite.progress import formatBytes
from twisted_udpsuite.terminal import LineTerminal, printable

__all__ = ["HELP", "IPMsgTerminal"]

HELP = """\
commands:
  /who                 the members of the LAN (IP Messenger, FeiQ, iptux)
  /to NAME             talk to NAME from now on (a nick, user, host or address)
  /msg NAME TEXT       one message to NAME
  /seal NAME TEXT      a sealed message: NAME must open it (you hear when)
  /open N              open sealed message N
  /send NAME FILE...   offer files to NAME
  /files               the files offered to you
  /get N [DIR]         fetch offered file N (into DIR, else the download directory)
  /shared NAME         ask an iptux user for its shared files
  /away [TEXT]         be away (TEXT: why); /back to return
  /refresh             announce yourself again (everyone answers)
  /help                this text
  /quit                leave (everyone hears) and exit (Ctrl-D too)
  //text               say a line that starts with '/'
Anything else goes to the /to member."""

#: How many offered files, and sealed messages, /files and /open remember.
_REMEMBERED = 100
#: Files at least this big show their progress (each quarter) while /get fetches them.
_PROGRESS_FROM = 1 << 20


def _safe(text: str) -> str:
    return printable(text.encode("utf-8"))


@dataclass(frozen=True)
class _Offered:
    message: Message
    attachment: Attachment


@implementer(IIPMsgObserver)
class IPMsgTerminal(LineTerminal):
    """
    The user's side of an L{IPMsgPeer}.

    @param downloads: where C{/get} puts files by default.
    @param clock: wall-clock time for message stamps.
    """

    def __init__(
        self,
        peer: IPMsgPeer,
        isTerminal: bool = False,
        encoding: str = "utf-8",
        lineEditing: bool = False,
        downloads: FilePath[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(isTerminal, encoding, lineEditing)
        self.peer = peer
        self.downloads = downloads or FilePath(os.getcwd())
        self.clock = clock
        self.target: PeerInfo | tuple[str, int] | None = None
        self.offered: list[_Offered] = []
        self.sealed: list[Message] = []
        peer.addObserver(self)
        self.commands.update(
            {
                "who": lambda args: self._who(),
                "to": self._to,
                "msg": lambda args: self._message(args, sealed=False),
                "seal": lambda args: self._message(args, sealed=True),
                "open": self._open,
                "send": self._send,
                "files": lambda args: self._files(),
                "get": self._get,
                "shared": self._shared,
                "away": lambda args: self._away(" ".join(args) or "away"),
                "back": lambda args: self._away(None),
                "refresh": lambda args: self.peer.announce(),
                "help": lambda args: self._lines(HELP),
            }
        )

    # Observer

    def peerJoined(self, peer: PeerInfo) -> None:
        self.showNotice(f"{_safe(peer.describe())} is here")

    def peerChanged(self, peer: PeerInfo) -> None:
        self.showNotice(f"now: {_safe(peer.describe())}")

    def peerLeft(self, peer: PeerInfo, reason: str) -> None:
        self.showNotice(f"{_safe(peer.nick)} left ({reason})")

    def messageOpened(self, peer: PeerInfo, packetNo: int) -> None:
        self.showNotice(f"{_safe(peer.nick)} opened your sealed message")

    def messageReceived(self, message: Message) -> None:
        stamp = time.strftime("%H:%M", time.localtime(self.clock()))
        sender = _safe(message.peer.nick)
        if message.sealed:
            self.sealed = (self.sealed + [message])[-_REMEMBERED:]
            number = len(self.sealed)
            self._write(f"{stamp} <{sender}> [sealed message: /open {number}]")
        elif message.text:
            marker = " (auto-reply)" if message.autoReply else ""
            self._write(f"{stamp} <{sender}>{marker} {_safe(message.text)}")
        for attachment in message.attachments:
            self.offered = (self.offered + [_Offered(message, attachment)])[-_REMEMBERED:]
            size = formatBytes(attachment.size)
            self.showNotice(
                f"{sender} offers {_safe(attachment.name)} ({size}): /get {len(self.offered)}"
            )

    # Talking

    def _find(self, name: str) -> PeerInfo | tuple[str, int] | None:
        found = self.peer.findPeers(name)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            choices = ", ".join(_safe(p.describe()) for p in found)
            self.showNotice(f"{name!r} is ambiguous: {choices}; use the address")
            return None
        try:
            host, port = parseHostPort(name, self.peer.port)
            ipaddress.ip_address(host)
            return (host, port)
        except ValueError:
            self.showNotice(f"nobody called {name!r} here (see /who)")
            return None

    def say(self, text: str) -> None:
        if self.target is None:
            self.showNotice("talk to whom? /to NAME first (see /who)")
            return
        self._deliver(self.target, text, sealed=False)

    def _deliver(self, to: PeerInfo | tuple[str, int], text: str, sealed: bool) -> None:
        name = to.nick if isinstance(to, PeerInfo) else showAddress(*to)
        d = self.peer.sendMessage(to, text, sealed=sealed)

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, NotAcknowledged):
                shown = _safe(text[:40])
                self.showNotice(f"{_safe(name)} did not acknowledge (offline?): {shown}")
            else:
                self.showNotice(f"not sent: {failure.getErrorMessage()}")

        d.addErrback(failed)

    def _who(self) -> None:
        peers = self.peer.peerList()
        for peer in peers:
            self._write(f"  {_safe(peer.describe())}  [{_safe(peer.user)}@{_safe(peer.host)}]")
        self.showNotice(f"{len(peers)} member(s) seen")

    def _to(self, args: list[str]) -> None:
        if len(args) != 1:
            self.showNotice("usage: /to NAME")
            return
        found = self._find(args[0])
        if found is not None:
            self.target = found
            shown = found.describe() if isinstance(found, PeerInfo) else showAddress(*found)
            self.showNotice(f"talking to {_safe(shown)}")

    def _message(self, args: list[str], sealed: bool) -> None:
        if len(args) < 2:
            self.showNotice(f"usage: /{'seal' if sealed else 'msg'} NAME TEXT")
            return
        found = self._find(args[0])
        if found is not None:
            self._deliver(found, " ".join(args[1:]), sealed)

    def _open(self, args: list[str]) -> None:
        message = self._numbered(args, self.sealed, "open")
        if message is None:
            return
        self._write(f"(sealed) <{_safe(message.peer.nick)}> {_safe(message.text)}")
        self.peer.markRead(message).addErrback(lambda f: None)

    def _numbered(self, args: list[str], items: list[Any], command: str) -> Any:
        if not args or not args[0].isdigit() or not 1 <= int(args[0]) <= len(items):
            self.showNotice(f"usage: /{command} N (1 to {len(items)})")
            return None
        return items[int(args[0]) - 1]

    # Files

    def _send(self, args: list[str]) -> None:
        if len(args) < 2:
            self.showNotice("usage: /send NAME FILE...")
            return
        found = self._find(args[0])
        if found is None:
            return
        paths = [FilePath(os.path.abspath(os.path.expanduser(a))) for a in args[1:]]
        try:
            d = self.peer.offerFiles(found, paths)
        except ValueError as e:
            self.showNotice(f"cannot offer: {e}")
            return
        names = ", ".join(p.basename() for p in paths)
        self.showNotice(f"offered {names}")
        d.addErrback(lambda f: self.showNotice(f"offer of {names} not acknowledged; withdrawn"))

    def _files(self) -> None:
        for number, item in enumerate(self.offered, 1):
            a = item.attachment
            self._write(f"  {number}. {_safe(a.name)} ({formatBytes(a.size)}) "
                        f"from {_safe(item.message.peer.nick)}")  # fmt: skip
        self.showNotice(f"{len(self.offered)} file(s) offered")

    def _get(self, args: list[str]) -> None:
        item = self._numbered(args[:1], self.offered, "get [DIR]")
        if item is None:
            return
        directory = FilePath(os.path.expanduser(args[1])) if len(args) > 1 else self.downloads
        name = item.attachment.name
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            self.showNotice(f"refusing an unsafe file name: {_safe(name)}")
            return
        target = directory.child(name)
        try:
            d = self.peer.fetchAttachment(
                item.message, item.attachment, target, progress=self._progress(name)
            )
        except (OSError, ValueError) as e:
            self.showNotice(f"cannot fetch {_safe(name)}: {e}")
            return
        self.showNotice(f"fetching {_safe(name)} into {directory.path}...")

        def done(result: FetchResult) -> None:
            resumed = f", resumed at {result.resumedFrom}" if result.resumedFrom else ""
            self.showNotice(f"got {result.path.path} ({formatBytes(result.size)}{resumed})")

        d.addCallbacks(done, lambda f: self.showNotice(f"{_safe(name)}: {f.getErrorMessage()}"))

    def _progress(self, name: str) -> Callable[[int, int], None]:
        """A progress callback that notes each quarter of a file of at least 1 MiB."""
        shown = [0]

        def progress(done: int, total: int) -> None:
            quarter = 4 * done // total if total >= _PROGRESS_FROM else 0
            if 0 < quarter < 4 and quarter > shown[0]:
                shown[0] = quarter
                self.showNotice(f"{_safe(name)}: {25 * quarter}% of {formatBytes(total)}")

        return progress

    def _shared(self, args: list[str]) -> None:
        if len(args) != 1:
            self.showNotice("usage: /shared NAME")
            return
        found = self._find(args[0])
        if found is not None:
            self.peer.askSharedFiles(found)
            self.showNotice("asked; its files will show as offers")

    def _away(self, text: str | None) -> None:
        self.peer.setAbsence(text)
        self.showNotice("you are away" if text else "you are back")

    def leave(self) -> None:
        self.peer.removeObserver(self)
        self.peer.leave()
