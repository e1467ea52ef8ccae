"""The C{udpsuite ipmsg} terminal and command, in memory."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath

from tests.ipmsg.helpers import PREFIX, Member, RawSocket, member, raw
from tests.ipmsg.test_files import connectTCP
from tests.ipmsg.test_peer import feiq
from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.ipmsg import cli as ipmsgcli
from twisted_udpsuite.ipmsg.files import FileOffers, FileServerFactory
from twisted_udpsuite.ipmsg.terminal import IPMsgTerminal
from twisted_udpsuite.testing import MemoryNetwork


def terminal(m: Member, tmp_path: Any) -> tuple[IPMsgTerminal, StringTransport]:
    term = IPMsgTerminal(m.peer, downloads=FilePath(str(tmp_path)), clock=lambda: 0.0)
    transport = StringTransport()
    term.makeConnection(transport)
    return term, transport


def typed(net: MemoryNetwork, term: IPMsgTerminal, *lines: str) -> None:
    for line in lines:
        term.dataReceived(line.encode() + b"\n")
        net.advance(1)


def test_talk(tmp_path: Any) -> None:
    """
    /who lists the members; /to picks one and plain lines go to it; what it
    sends is shown with its nick, escape sequences neutralised.
    """
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    term, out = terminal(alice, tmp_path)
    net.advance(1.1)
    typed(net, term, "/who", "/to bob", "hello bob")
    assert [m.text for m in bob.seen.messages] == ["hello bob"]
    net.runUntil(bob.peer.sendMessage(alice.address, "\x1b[2J\x1b]0;pwned\x07 hi"))
    text = out.value().decode()
    assert "Bob (lab) at 192.0.2.2" in text and "1 member(s) seen" in text
    assert "<Bob> \\x1b[2J\\x1b]0;pwned\\x07 hi" in text and "\x1b" not in text
    typed(net, term, "/quit")
    assert term.done.called
    assert [r for _, r in bob.seen.left] == ["exit"]
    net.advance(10)
    assert net.clock.getDelayedCalls() == []


def test_feiqShown(tmp_path: Any) -> None:
    """A FeiQ datagram (GBK, command 288) is shown as its Chinese text."""
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    term, out = terminal(alice, tmp_path)
    raw(net, 5).send(feiq(42, 288, "下午开会"), alice.address)
    net.advance(0.1)
    assert "<张三> 下午开会" in out.value().decode()


def test_notAcknowledged(tmp_path: Any) -> None:
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    term, out = terminal(alice, tmp_path)
    typed(net, term, f"/msg {PREFIX}.9 anyone?")
    net.advance(10)
    assert "did not acknowledge (offline?): anyone?" in out.value().decode()


def test_sealedAndAway(tmp_path: Any) -> None:
    """A sealed message shows only a hint until /open, which tells the sender; /away tells all."""
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    term, out = terminal(alice, tmp_path)
    net.advance(1.1)
    net.runUntil(bob.peer.sendMessage(alice.address, "the code is 1234", sealed=True))
    assert "[sealed message: /open 1]" in out.value().decode()
    assert "1234" not in out.value().decode()
    typed(net, term, "/open 1", "/away lunch")
    assert "(sealed) <Bob> the code is 1234" in out.value().decode()
    assert len(bob.seen.opened) == 1
    assert bob.peer.peerList()[0].absent


def test_filesBothWays(tmp_path: Any) -> None:
    """/send offers a file; an offer to us is listed and /get fetches it."""
    net = MemoryNetwork()
    alice, bob = member(net, 1, "Alice"), member(net, 2, "Bob")
    alice.peer.offers = FileOffers(alice.host)
    bob.peer.offers = FileOffers(bob.host)
    (tmp_path / "mine.txt").write_bytes(b"from alice")
    (tmp_path / "theirs.txt").write_bytes(b"from bob" * 200_000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    term, out = terminal(alice, inbox)
    net.advance(1.1)
    typed(net, term, f"/send bob {tmp_path / 'mine.txt'}")
    [offer] = bob.seen.messages
    assert offer.attachments[0].name == "mine.txt"
    net.runUntil(bob.peer.offerFiles(alice.address, [FilePath(str(tmp_path / "theirs.txt"))]))
    assert "Bob offers theirs.txt (1.5 MiB): /get 1" in out.value().decode()
    typed(net, term, "/files", "/get 1")
    connectTCP(alice, FileServerFactory(bob.peer.offers, bob.host), bob.address[0]).flush()
    assert (inbox / "theirs.txt").read_bytes() == b"from bob" * 200_000
    text = out.value().decode()
    assert "theirs.txt: 25% of 1.5 MiB" in text and "theirs.txt: 75% of 1.5 MiB" in text
    assert f"got {inbox / 'theirs.txt'}" in text


def test_badCommands(tmp_path: Any) -> None:
    net = MemoryNetwork()
    alice = member(net, 1, "Alice")
    term, out = terminal(alice, tmp_path)
    typed(net, term, "hello", "/to nobody", "/get 3", "/open", "/frob")
    text = out.value().decode()
    for expected in ("talk to whom?", "nobody called 'nobody'", "usage: /get", "usage: /open",
                     "unknown command /frob"):  # fmt: skip
        assert expected in text


def runCommand(net: MemoryNetwork, argv: list[str], lines: list[str], monkeypatch: Any) -> Any:
    """Run udpsuite ipmsg on a host of C{net}, its stdio a StringTransport, typing C{lines}."""
    host = net.addHost(f"{PREFIX}.1/24")
    terminals: list[IPMsgTerminal] = []
    transport = StringTransport()

    def fakeStdio(protocol: IPMsgTerminal, reactor: Any) -> StringTransport:
        protocol.peer.broadcastTargets = [f"{PREFIX}.255"]
        terminals.append(protocol)
        protocol.makeConnection(transport)
        return transport

    monkeypatch.setattr(ipmsgcli, "connectStdio", fakeStdio)
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.main(host, ["ipmsg", *argv], Console(out, err)))
    net.advance(1.1)
    for line in lines:
        terminals[0].dataReceived(line.encode() + b"\n")
        net.advance(1)
    return net.runUntil(d), transport.value().decode() + err.getvalue(), host


def test_command(monkeypatch: Any) -> None:
    """udpsuite ipmsg joins the LAN on UDP and TCP 2425, lists members, and leaves on /quit."""
    net = MemoryNetwork()
    bob = member(net, 2, "Bob")
    status, text, host = runCommand(net, ["--nick", "Alice", "--group", "ops"], ["/who", "/quit"],
                                    monkeypatch)  # fmt: skip
    assert status == 0
    assert "as 'Alice', port 2425" in text and "Bob (lab) at 192.0.2.2" in text
    assert [port for port, *_ in host.tcpServers] == [2425]
    assert [(p.nick, p.group) for p, _ in bob.seen.left] == [("Alice", "ops")]
    assert host.udpPorts == {}
    net.advance(10)
    assert net.clock.getDelayedCalls() == []


def test_commandPortTaken(monkeypatch: Any) -> None:
    """Port 2425 in use (another IP Messenger) is one line and status 1."""
    net = MemoryNetwork()
    host = net.addHost(f"{PREFIX}.1/24")
    host.listenUDP(2425, RawSocket(), interface="")
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.main(host, ["ipmsg"], Console(out, err)))
    assert net.runUntil(d) == 1
    assert "another IP Messenger running here?" in err.getvalue()


@pytest.mark.parametrize("argv", [["--encoding", "nope"], ["--host", "224.0.0.1"],
                                  ["--download-dir", "/nonexistent/x"]])  # fmt: skip
def test_commandUsage(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    net = MemoryNetwork()
    d = Deferred.fromCoroutine(cli.main(net.addHost("192.0.2.1/24"), ["ipmsg", *argv],
                                        Console(out, err)))  # fmt: skip
    assert net.runUntil(d) == 2 and err.getvalue().count("\n") == 1
