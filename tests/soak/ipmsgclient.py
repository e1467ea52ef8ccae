"""
A good client of the IPMsg service for the fuzz test (C{python -m tests.soak.ipmsgclient
PLAN.json}, run inside the test's namespace): the suite's own L{IPMsgPeer} on 127.0.0.1
(where its TCP connections to the service come from: an offer is served only to the
address it was made to) sends a message and waits for its acknowledgement, asks for the
shared files (iptux's ASKSHARED) and fetches one over TCP, and offers a file of its own,
which the service's drop box fetches. Prints what it got; the test compares it with the
files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from zope.interface import implementer

from tests.soak.driver import runWithPlan
from twisted_udpsuite.ipmsg import (
    FileOffers,
    FileServerFactory,
    IIPMsgObserver,
    IPMsgPeer,
    Message,
    PeerInfo,
)


@implementer(IIPMsgObserver)
class _Offers:
    """Fires C{offered} with the first message that offers files."""

    def __init__(self) -> None:
        self.offered: Deferred[Message] = Deferred()

    def messageReceived(self, message: Message) -> None:
        if message.attachments and not self.offered.called:
            self.offered.callback(message)

    def peerJoined(self, peer: PeerInfo) -> None:
        pass

    def peerChanged(self, peer: PeerInfo) -> None:
        pass

    def peerLeft(self, peer: PeerInfo, reason: str) -> None:
        pass

    def messageOpened(self, peer: PeerInfo, packetNo: int) -> None:
        pass


async def run(reactor: Any, plan: dict[str, Any]) -> dict[str, Any]:
    target = (plan["target"][0], plan["target"][1])
    offers = FileOffers(reactor)
    peer = IPMsgPeer("good", "soak", reactor, user="good", host="goodpc", broadcastTargets=[],
                     offers=offers, attempts=10)  # fmt: skip
    seen = _Offers()
    peer.addObserver(seen)
    udp = reactor.listenUDP(0, peer, interface="127.0.0.1")
    files = FileServerFactory(offers, reactor)
    tcp = reactor.listenTCP(udp.getHost().port, files, interface="127.0.0.1")
    try:
        await peer.sendMessage(target, "hello box").addTimeout(15, reactor)
        peer.askSharedFiles(target)
        offer = await seen.offered.addTimeout(15, reactor)
        wanted = next(a for a in offer.attachments if a.name == plan["fetch"])
        got = FilePath(plan["into"])
        result = await peer.fetchAttachment(offer, wanted, got).addTimeout(15, reactor)
        fetched = hashlib.sha256(Path(result.path.path).read_bytes()).hexdigest()
        got.remove()
        await peer.offerFiles(target, [FilePath(plan["give"])], "for the box").addTimeout(
            15, reactor
        )
        for _ in range(150):  # the box fetches it after acknowledging the offer
            if files.stats.served:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        return {"fetched": fetched, "given": files.stats.served}
    finally:
        peer.leave()
        await tcp.stopListening()
        await udp.stopListening()


if __name__ == "__main__":
    runWithPlan(run)
