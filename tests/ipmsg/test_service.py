"""C{twistd -n udpsuite ipmsg}: options, the drop box, shared files, stop, metrics."""

from __future__ import annotations

import os
from typing import Any

import pytest
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.filepath import FilePath

from tests.ipmsg.helpers import BROADCASTS, PREFIX, member, raw
from tests.ipmsg.test_files import connectTCP
from tests.test_metrics import scrape
from twisted_udpsuite import tap
from twisted_udpsuite.ipmsg import wire
from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.service import IPMsgService, Options, makeService
from twisted_udpsuite.ipmsg.wire import Mode
from twisted_udpsuite.metrics import SuiteMetrics
from twisted_udpsuite.testing import MemoryNetwork


def parse(argv: list[str]) -> Options:
    options = Options()
    options.parseOptions(argv)
    return options


def test_options(tmp_path: Any) -> None:
    """The contract's options, with their defaults; bad combinations are usage errors."""
    options = parse(["--nick", "dropbox", "--group", "IT"])
    assert (options["port"], options["interface"], options["nick"], options["group"]) == (
        2425, "", "dropbox", "IT")  # fmt: skip
    assert options["encoding"] is None and not options["accept-files"]
    for argv in (
        ["--accept-files"],
        ["--root", str(tmp_path / "missing")],
        ["--host", "255.255.255.255"],
        ["--host", "10.0.0.0/8"],
        ["--encoding", "klingon"],
    ):
        with pytest.raises(usage.UsageError):
            parse(argv)
    assert parse(["--host", "10.0.0.5", "--host", "10.0.1.0/30"])["host"] == [
        "10.0.0.5", "10.0.1.0/30"]  # fmt: skip


def test_subcommandButNotByDefault() -> None:
    """C{ipmsg} is a twistd subcommand, and a plain C{twistd -n udpsuite} leaves it out."""
    options = tap.Options()
    options.parseOptions(["ipmsg", "--nick", "x"])
    [(spec, _)] = options.selected
    assert spec.name == "ipmsg"
    options = tap.Options()
    options.parseOptions([])
    assert "ipmsg" not in [spec.name for spec, _ in options.selected]


def service(net: MemoryNetwork, tmp_path: Any, *argv: str) -> IPMsgService:
    host = net.addHost(f"{PREFIX}.10/24")
    svc = makeService(parse(["--nick", "dropbox", *argv]), host)
    svc.peer.broadcastTargets = [f"{PREFIX}.255"]
    svc.peer._broadcasts = BROADCASTS
    return svc


def test_listenersAndPresence(tmp_path: Any) -> None:
    """
    It binds UDP and TCP 2425 as the listener C{ipmsg} (the name socket
    activation matches), announces itself, and says goodbye (BR_EXIT) when it stops.
    """
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    svc = service(net, tmp_path)
    assert [(x.name, x.transport) for x in svc.listeners] == [
        ("ipmsg", "udp"),
        ("ipmsg", "tcp"),
    ]
    svc.privilegedStartService()
    svc.startService()
    assert svc.listeners[1].listening.getHost().port == 2425
    net.advance(1.1)
    assert [p.nick for p in bob.peer.peerList()] == ["dropbox"]
    svc.stopService()
    net.advance(0.1)
    assert bob.peer.peerList() == [] and [r for _, r in bob.seen.left] == ["exit"]
    assert net.clock.getDelayedCalls() == []


def test_dropBox(tmp_path: Any) -> None:
    """
    With C{--accept-files}, a file offered to the service lands whole in
    C{--root}; a second file of the same name gets C{NAME (1).ext}; every
    message is logged in one line.
    """
    net = MemoryNetwork()
    root, shared = tmp_path / "root", tmp_path / "shared"
    root.mkdir()
    shared.mkdir()
    (shared / "report.txt").write_bytes(b"quarterly numbers")
    alice = member(net, 1, "Alice")
    alice.peer.offers = FileOffers(alice.host)
    server = FileServerFactory(alice.peer.offers, alice.host)
    svc = service(net, tmp_path, "--root", str(root), "--accept-files")
    svc.startService()
    net.advance(1.1)
    to = (f"{PREFIX}.10", 2425)
    with capturedLogs() as events:
        for _ in range(2):
            net.runUntil(alice.peer.offerFiles(to, [FilePath(str(shared / "report.txt"))], "fyi"))
            connectTCP(svc.peer._reactor, server, alice.address[0]).flush()
    assert sorted(os.listdir(root)) == ["report (1).txt", "report.txt"]
    assert (root / "report (1).txt").read_bytes() == b"quarterly numbers"
    lines = [e for e in events if e.get("ipmsgMessage")]
    assert len(lines) == 2 and lines[0]["text"] == "fyi" and "report.txt" in lines[0]["files"]
    svc.stopService()
    net.advance(1)


def test_noFilesWithoutAcceptFiles(tmp_path: Any) -> None:
    """Without C{--accept-files} an offer is logged, never fetched."""
    net = MemoryNetwork()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.bin").write_bytes(b"x")
    alice = member(net, 1, "Alice")
    alice.peer.offers = FileOffers(alice.host)
    svc = service(net, tmp_path)
    svc.startService()
    with capturedLogs() as events:
        net.runUntil(
            alice.peer.offerFiles((f"{PREFIX}.10", 2425), [FilePath(str(shared / "x.bin"))])
        )
    assert svc.peer._reactor.tcpClients == []
    assert any("no --accept-files" in e.get("log_format", "") for e in events)
    svc.stopService()
    net.advance(1)


def test_unsafeNamesRefused(tmp_path: Any) -> None:
    """An offered name that would leave the root is refused."""
    net = MemoryNetwork()
    root = tmp_path / "root"
    root.mkdir()
    svc = service(net, tmp_path, "--root", str(root), "--accept-files")
    for name in ("../evil", "a/b", "..", ""):
        assert svc.dropBox._target(name) is None
    assert svc.dropBox._target("ok.txt") == FilePath(os.path.realpath(root / "ok.txt"))


def test_sharedFilesForIptux(tmp_path: Any) -> None:
    """
    With C{--share DIR}, iptux's "ask shared files" (command 0xFF) is
    answered by an offer of DIR's files, which the asker may then fetch.
    """
    net = MemoryNetwork()
    share = tmp_path / "share"
    share.mkdir()
    (share / "manual.pdf").write_bytes(b"%PDF")
    (share / ".hidden").write_bytes(b"no")
    svc = service(net, tmp_path, "--share", str(share))
    svc.startService()
    sock = raw(net, 5)
    sock.send(b"1_iptux 0.8.3:1:tux:box:%d:" % Mode.IPTUX_ASKSHARED, (f"{PREFIX}.10", 2425))
    net.advance(0.1)
    [offer] = [p for p, _ in sock.received if p.mode == Mode.SENDMSG]
    assert offer.has(wire.FILEATTACHOPT)
    [attachment] = wire.parseAttachments(offer.extra[0])
    assert (attachment.name, attachment.size) == ("manual.pdf", 4)
    assert svc.offers.lookup(f"{PREFIX}.5", offer.packetNo, 0) is not None
    svc.stopService()
    net.advance(10)


def test_metrics(tmp_path: Any) -> None:
    """The service's peers, messages and drops are read at each scrape."""
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    svc = service(net, tmp_path)
    metrics = SuiteMetrics()
    metrics.watch("ipmsg", svc)
    svc.startService()
    net.advance(1.1)
    net.runUntil(alice.peer.sendMessage((f"{PREFIX}.10", 2425), "ping"))
    svc.peer.datagramReceived(b"junk", (alice.address[0], 2425))
    samples = scrape(metrics)
    assert samples[("udpsuite_ipmsg_peers", ())] == 1
    assert samples[("udpsuite_ipmsg_messages_total", (("direction", "in"),))] == 1
    assert samples[("udpsuite_ipmsg_dropped_total", (("reason", "malformed"),))] == 1
    svc.stopService()
    net.advance(1)


@pytest.mark.parametrize("names", [("ipmsg", "ipmsg"), ("ipmsg-udp", "ipmsg-tcp")])
def test_socketActivationByName(tmp_path: Any, names: tuple[str, str]) -> None:
    """systemd sockets named C{ipmsg} (or C{ipmsg-udp}/C{ipmsg-tcp}) go to the right listener."""
    from twisted_udpsuite import activation

    net = MemoryNetwork()
    svc = service(net, tmp_path)
    sockets = [
        activation.InheritedSocket(3, names[0], 2, "udp", "0.0.0.0", 2425),
        activation.InheritedSocket(4, names[1], 2, "tcp", "0.0.0.0", 2425),
    ]
    activation.assign(sockets, svc.listeners)
    assert [x.inherited for x in svc.listeners] == [3, 4]
