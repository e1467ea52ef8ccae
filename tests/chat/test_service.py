"""The chatroom service (twistd options, startup) and the udpsuite chat command, in memory."""

from __future__ import annotations

import io
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.testing import StringTransport

from tests.chat.helpers import rawClient
from tests.helpers import successResultOf
from twisted_udpsuite import cli, tap
from twisted_udpsuite.chat import cli as chatcli
from twisted_udpsuite.chat.service import ChatRoomService, Options
from twisted_udpsuite.chat.terminal import ChatTerminal
from twisted_udpsuite.command import Console
from twisted_udpsuite.testing import MemoryNetwork


def test_options() -> None:
    """Every limit is an option, checked, and lands in the room's policy."""
    options = tap.Options()
    options.parseOptions(
        ["chatroom", "--port", "0", "--interface", "127.0.0.1", "--max-members", "3"]
        + ["--max-message", "200", "--history", "10", "--backlog", "50"]
        + ["--idle-timeout", "30", "--rate", "2", "--burst", "4"]
    )
    sub = options.subOptions
    assert isinstance(sub, Options)
    policy = sub.policy()
    assert (policy.maxMembers, policy.maxMessage, policy.history, policy.backlog) == (
        3,
        200,
        10,
        10,
    )
    assert (policy.idleTimeout, policy.rate, policy.burst) == (30, 2, 4)
    defaults = Options()
    defaults.parseOptions([])
    assert defaults["port"] == 9999 and defaults["interface"] == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-members", "0"],
        ["--max-message", "x"],
        ["--max-message", "10"],
        ["--idle-timeout", "0"],
        ["--rate", "0"],
        ["--port", "99999"],
    ],
)
def test_badOptions(argv: list[str]) -> None:
    """Bad limits are usage errors."""
    from twisted.python import usage

    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


def test_serviceOnTheMemoryNetwork() -> None:
    """The service binds, serves, refuses a taken port and unbinds cleanly."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.1/24")
    options = tap.Options()
    options.parseOptions(["chatroom", "--port", "9999"])
    top = tap.makeService(options, reactor=host)
    top.startService()
    service = top.getServiceNamed("chatroom")
    assert isinstance(service, ChatRoomService)
    client = rawClient(net, 0)
    client.send(b"JOIN alice")
    net.pump()
    assert client.take()[0] == b"OK JOINED alice 1 1\n"
    other = ChatRoomService(port=9999, reactor=host)
    with pytest.raises(CannotListenError):
        other.startService()
    successResultOf(Deferred.fromCoroutine(_stop(top)))
    assert host.udpPorts == {}
    assert net.clock.getDelayedCalls() == []


async def _stop(service: Any) -> None:
    await service.stopService()


def runCli(net: MemoryNetwork, host: Any, argv: list[str], lines: list[bytes]) -> tuple[int, str]:
    """Run udpsuite chat with a StringTransport for stdio, typing C{lines}."""
    terminals: list[ChatTerminal] = []
    transport = StringTransport()

    def fakeStdio(protocol: ChatTerminal, reactor: Any) -> StringTransport:
        terminals.append(protocol)
        protocol.makeConnection(transport)
        return transport

    original = chatcli.connectStdio
    chatcli.connectStdio = fakeStdio  # type: ignore[assignment]
    try:
        out, err = io.StringIO(), io.StringIO()
        d = Deferred.fromCoroutine(cli.main(host, ["chat", *argv], Console(out, err)))
        net.advance(1)
        for line in lines:
            terminals[0].dataReceived(line + b"\n")
            net.advance(1)
        if not d.called:
            terminals[0].connectionLost(None)
        status = net.runUntil(d)
    finally:
        chatcli.connectStdio = original  # type: ignore[assignment]
    return status, transport.value().decode() + err.getvalue()


def test_chatCommandDirect() -> None:
    """udpsuite chat PEER sends typed lines to the peer and shows what comes back."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.100/24")
    nc = rawClient(net, 0)
    status, shown = runCli(net, host, ["--port", "5000", "192.0.2.10:40000"], [b"hi", b"/quit"])
    assert status == 0
    assert nc.take() == [b"hi"]
    assert "-- listening on UDP port 5000" in shown
    assert "-- talking to 192.0.2.10:40000" in shown
    assert host.udpPorts == {}


def test_chatCommandRoom() -> None:
    """--room and --nick join at start; Ctrl-D leaves."""
    from tests.chat.helpers import makeRoom

    net = MemoryNetwork(seed=1)
    _, room = makeRoom(net)
    host = net.addHost("192.0.2.100/24")
    status, shown = runCli(net, host, ["--room", "192.0.2.1", "--nick", "alice"], [b"hello"])
    assert status == 0
    assert "-- joined the room as alice" in shown
    assert room.history[-2].text == "hello" and room.history[-1].text == "alice left"
    net.advance(1)
    assert net.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--encoding", "nope"],
        ["--room", "192.0.2.1"],
        ["--nick", "x"],
        ["--room", "192.0.2.1", "--nick", "bad*nick"],
        ["host-without-port"],
        ["--keepalive", "0"],
        ["a:1", "b:2"],
    ],
)
def test_chatUsageErrors(argv: list[str]) -> None:
    """Bad options are one line and status 2."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.100/24")
    out, err = io.StringIO(), io.StringIO()
    status = net.runUntil(
        Deferred.fromCoroutine(cli.main(host, ["chat", *argv], Console(out, err)))
    )
    assert status == 2 and err.getvalue().count("\n") == 1


def test_chatPortInUse() -> None:
    """A local port in use is one line and status 1."""
    net = MemoryNetwork(seed=1)
    host = net.addHost("192.0.2.100/24")
    rawHost = host
    from twisted.internet.protocol import DatagramProtocol

    rawHost.listenUDP(5000, DatagramProtocol())
    out, err = io.StringIO(), io.StringIO()
    argv = ["chat", "--port", "5000"]
    status = net.runUntil(Deferred.fromCoroutine(cli.main(host, argv, Console(out, err))))
    assert status == 1
    assert err.getvalue() == "udpsuite chat: cannot listen on *:5000: Address already in use\n"
