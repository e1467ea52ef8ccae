"""
How downloads end when the final ACK is lost (#19 §1), for real: curl and a scripted
client in a namespace of the test's own whose nftables rules drop exactly that ACK once.
The server must log each as completed-unconfirmed, soon, and never as failed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import runProcess
from tests.tftp import lossnet

pytestmark = pytest.mark.interop

# The first ACK 3 that reaches a transfer port is dropped ("quota until 40 bytes": the
# first 32-byte datagram only): the final ACK of a 3-block download.
_LOSE_FINAL_ACK_3 = """
table inet udpsuite_end {
    chain input {
        type filter hook input priority 0;
        udp dport != 6969 @th,64,32 0x00040003 counter quota until 40 bytes drop
    }
}
"""

# A client that ACKs every block, sends the final ACK and then, by mode: closes its port
# (as curl, iPXE and pxelinux do), keeps it open and silent (a host that sends no ICMP),
# or asks for the next file from a new port (pxelinux going on; the old port stays open,
# as on a firmware that sends no ICMP).
_CLIENT = r"""
import socket, sys, time
mode, name = sys.argv[1], sys.argv[2].encode()
def get(name):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(b"\0\1" + name + b"\0octet\0", ("127.0.0.1", 6969))
    data = b""
    while True:
        packet, peer = s.recvfrom(600)
        assert packet[:2] == b"\0\3", packet
        data += packet[4:]
        s.sendto(b"\0\4" + packet[2:4], peer)
        if len(packet) < 516:
            return s, data
s, data = get(name)
if mode == "silent":
    time.sleep(8)
if mode == "next":
    following, more = get(b"next")
    time.sleep(1)
    following.close()
s.close()
sys.stdout.write(str(len(data)))
"""

_ENDED = (
    rb"RRQ '(?P<file>[^']+)' \([^)]*\): (?P<outcome>[a-z-]+) "
    rb"\((?P<bytes>\d+) bytes, (?P<s>[\d.]+) s"
)


async def _ending(server: Any, name: str) -> re.Match[bytes]:
    match = await server.waitFor(rb"RRQ '" + name.encode() + rb"' .*", timeout=30)
    ended = re.search(_ENDED, match.group(0))
    assert ended is not None, match.group(0)
    return ended


@pytest.mark.parametrize(
    ("mode", "reason", "within"),
    [
        ("close", b"ICMP port unreachable", 0.5),
        ("next", b"moved on to another file", 0.5),
        ("silent", b"no final ACK after 3 resends", 5.0),
    ],
)
@pytest_twisted.ensureDeferred
async def test_lostFinalAckOfAScriptedClient(
    reactor: Any, tmp_path: Path, mode: str, reason: bytes, within: float
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(512 * 2 + 100)
    (root / "f").write_bytes(data)
    (root / "next").write_bytes(b"n" * 10)
    async with lossnet.namespace(reactor, _LOSE_FINAL_ACK_3) as inNs:
        async with lossnet.server(reactor, inNs, root) as server:
            argv = [*inNs, sys.executable, "-c", _CLIENT, mode, "f"]
            out, err, code = await runProcess(reactor, argv, timeout=30)
            assert (code, out) == (0, str(len(data)).encode()), err
            ended = await _ending(server, "f")
            assert ended.group("outcome") == b"completed-unconfirmed", server.output
            assert int(ended.group("bytes")) == len(data)
            assert float(ended.group("s")) < within, server.output
            assert reason in server.output
            assert b"failed" not in server.output


@pytest_twisted.ensureDeferred
async def test_lostFinalAckOfCurl(reactor: Any, tmp_path: Path) -> None:
    """curl closes its port after the final ACK: ICMP ends the download at once."""
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(512 * 2 + 100)
    (root / "f").write_bytes(data)
    async with lossnet.namespace(reactor, _LOSE_FINAL_ACK_3) as inNs:
        async with lossnet.server(reactor, inNs, root) as server:
            get = [*inNs, curl, "-sS", "-o", str(tmp_path / "got"), lossnet.url("f")]
            out, err, code = await runProcess(reactor, get, timeout=30)
            assert code == 0, err
            assert (tmp_path / "got").read_bytes() == data
            ended = await _ending(server, "f")
            nft = [*inNs, requirePeer("nft"), "list", "ruleset"]
            ruleset, _, _ = await runProcess(reactor, nft)
    assert b"counter packets 1 " in ruleset, ruleset  # the final ACK was dropped
    assert ended.group("outcome") == b"completed-unconfirmed", server.output
    assert int(ended.group("bytes")) == len(data)
    assert float(ended.group("s")) < 0.5, server.output
    assert b"ICMP port unreachable" in server.output
