"""
Our side of the iptux interop test, run inside the test's network namespace:
an L{IPMsgPeer} on UDP 2425 that meets iptux, messages it, asks for its shared
files and fetches one.  Every step prints one JSON line; every wait is bounded.

Usage: python iptux_driver.py DOWNLOAD_DIR OUR_ADDRESS
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.peer import MAX_INBOUND, IPMsgPeer, Message, RecordingObserver
from twisted_udpsuite.ipmsg.wire import Mode, decodePacket


def say(**fields: Any) -> None:
    print(json.dumps(fields, ensure_ascii=False), flush=True)


class Watching(IPMsgPeer):
    """
    A peer that also reports the first BR_ENTRY (iptux's broadcast at start) and
    the first ANSENTRY (iptux listing us answers our BR_ENTRY so) from each source.
    """

    heard: set[tuple[str, str]]
    me: str

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            mode = decodePacket(data).mode
        except ValueError:
            mode = None
        if mode in (Mode.BR_ENTRY, Mode.ANSENTRY) and addr[0] != self.me:
            event = (Mode(mode).name.lower(), addr[0])
            if event not in self.heard:
                self.heard.add(event)
                say(step=event[0], source=addr[0])
        super().datagramReceived(data, addr)


async def waitFor(reactor: Any, check: Any, timeout: float, every: Any = None) -> None:
    """Poll C{check} every 0.2 s (calling C{every} each second) until true, for C{timeout} s."""
    for tick in range(int(timeout / 0.2)):
        if check():
            return
        if every is not None and tick % 5 == 0:
            every()
        await task.deferLater(reactor, 0.2, lambda: None)
    raise TimeoutError(f"waited {timeout} s")


async def main(reactor: Any, downloads: str, me: str) -> None:
    offers = FileOffers(reactor)
    peer = Watching("udpsuite-bot", "robots", reactor, offers=offers, attempts=10)
    peer.heard = set()
    peer.me = me
    seen = RecordingObserver()
    peer.addObserver(seen)
    udp = reactor.listenUDP(2425, peer, interface="", maxPacketSize=MAX_INBOUND + 1)
    tcp = reactor.listenTCP(2425, FileServerFactory(offers, reactor))
    say(step="listening")
    try:
        # iptux starts after us: its BR_ENTRY broadcast reaches us; then we announce
        # every second until it answers ours with ANSENTRY.
        kinds = lambda: {kind for kind, _ in peer.heard}  # noqa: E731
        await waitFor(reactor, lambda: "br_entry" in kinds(), 40)
        await waitFor(reactor, lambda: "ansentry" in kinds(), 20, peer.announce)
        [tux] = [p for p in peer.peerList() if p.isIptux]
        say(step="table", nick=tux.nick, group=tux.group, version=tux.version,
            encoding=tux.encoding)  # fmt: skip
        number = await peer.sendMessage(tux, "hello from udpsuite 你好").addTimeout(15, reactor)
        say(step="acked", packetNo=number)
        peer.askSharedFiles(tux)
        await waitFor(reactor, lambda: any(m.attachments for m in seen.messages), 15)
        offer: Message = next(m for m in seen.messages if m.attachments)
        attachment = offer.attachments[0]
        say(step="offer", name=attachment.name, size=attachment.size)
        d: Deferred[Any] = peer.fetchAttachment(
            offer, attachment, FilePath(downloads).child(attachment.name)
        )
        result = await d.addTimeout(15, reactor)
        data = result.path.getContent()
        say(step="fetched", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    finally:
        peer.leave()
        await tcp.stopListening()
        await udp.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:3])))
