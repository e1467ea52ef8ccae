"""Tests for C{udpsuite send} and L{twisted_udpsuite.terminal.printable}."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from twisted_udpsuite import cli
from twisted_udpsuite.command import Console
from twisted_udpsuite.echo.server import UDPEchoProtocol
from twisted_udpsuite.terminal import printable
from twisted_udpsuite.testing import MemoryNetwork


class Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.transport.write(b"\x1b]0;owned\x07re: " + data, addr)


def run(argv: list[str]) -> tuple[int, str, str, Recorder, MemoryNetwork]:
    net = MemoryNetwork()
    server = net.addHost("192.0.2.1/24")
    client = net.addHost("192.0.2.2/24")
    recorder = Recorder()
    server.listenUDP(9999, recorder)
    server.listenUDP(7007, UDPEchoProtocol(server))
    out, err = io.StringIO(), io.StringIO()
    status = net.runUntil(Deferred.fromCoroutine(cli.main(client, argv, Console(out, err))))
    return status, out.getvalue(), err.getvalue(), recorder, net


def test_sendOneDatagram() -> None:
    """The message words are joined into one datagram; without --wait nothing is shown."""
    status, out, err, recorder, net = run(["send", "192.0.2.1:9999", "hello", "room"])
    assert (status, out, err) == (0, "", "")
    assert recorder.received == [b"hello room"]
    assert net.clock.getDelayedCalls() == []


def test_waitShowsRepliesSafely() -> None:
    """With --wait, replies are printed with their source, escape sequences neutralised."""
    status, out, _, _, net = run(["send", "192.0.2.1:9999", "hi", "--wait", "1"])
    assert status == 0
    assert out == "192.0.2.1:9999: \\x1b]0;owned\\x07re: hi\n"
    assert net.clock.seconds() == 1


def test_encoding() -> None:
    """--encoding encodes the message (gbk for legacy peers)."""
    status, out, _, recorder, _ = run(["send", "192.0.2.1:9999", "你好", "-e", "gbk", "-w", "1"])
    assert recorder.received == ["你好".encode("gbk")]
    assert out.endswith("re: 你好\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["send"],
        ["send", "192.0.2.1:9999"],
        ["send", "192.0.2.1", "x"],
        ["send", "192.0.2.1:1", "x", "-e", "nope"],
        ["send", "192.0.2.1:1", "x", "-w", "-1"],
    ],
)
def test_usageErrors(argv: list[str]) -> None:
    """Missing arguments, a missing port, a bad encoding or wait: exit 2, one line."""
    status, out, err, _, _ = run(argv)
    assert status == 2 and out == "" and err.count("\n") == 1


@pytest.mark.parametrize(
    "data, shown",
    [
        (b"plain text", "plain text"),
        (b"\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
        (b"tab\tand\nnewline\r", "tab\tand\\nnewline\\r"),
        (b"\xff\xfe", "\\xff\\xfe"),
        ("\u009b31m".encode(), "\\x9b31m"),
        ("evil\u202egnp.exe".encode(), "evil\\u202egnp.exe"),
        ("caf\u00e9 \U0001f600".encode(), "caf\u00e9 \U0001f600"),
    ],
)
def test_printable(data: bytes, shown: str) -> None:
    """Control characters, C1 (CSI), bidi overrides and undecodable bytes become visible."""
    assert printable(data) == shown


@given(st.binary(), st.sampled_from(["utf-8", "gbk", "latin-1"]))
def test_printableNeverEmitsControls(data: bytes, encoding: str) -> None:
    """Whatever arrives, the output holds no control character but tab."""
    import unicodedata

    text = printable(data, encoding)
    assert all(
        ch == "\t" or unicodedata.category(ch) not in ("Cc", "Cf") or ch == "\u200d" for ch in text
    )


def test_waitToAPortWithNothingListening() -> None:
    """
    send --wait to a port nobody listens on: the ICMP port unreachable is reported as
    "connection refused" at once, exit 1 (the socket is connected, so it hears it).
    """
    status, out, err, _, net = run(["send", "192.0.2.1:9", "hi", "--wait", "5"])
    assert (status, out) == (1, "")
    assert err == "udpsuite send: 192.0.2.1:9: connection refused (nothing listening)\n"
    assert net.clock.seconds() < 1
    assert net.clock.getDelayedCalls() == []


def test_anySourceStillWaits() -> None:
    """--any-source leaves the socket unconnected (replies may come from anywhere)."""
    status, out, _, _, net = run(["send", "192.0.2.1:9999", "hi", "-w", "1", "--any-source"])
    assert status == 0 and out.startswith("192.0.2.1:9999: ")
    assert net.clock.seconds() == 1
