"""
How downloads end when the final ACK is lost (#19 §1), for real: curl and a scripted
client in a namespace of the test's own whose nftables rules drop exactly that ACK once.
The server must log each as completed-unconfirmed, soon, and never as failed.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess
from tests.tftp import lossnet
from twisted_udpsuite.paths import isTemporaryName

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
    root, data = lossnet.servedFile(tmp_path, "f", 512 * 2 + 100)
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
    root, data = lossnet.servedFile(tmp_path, "f", 512 * 2 + 100)
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


# Ten uploads, each stopped after its tenth block with its port kept open: the server is
# SIGKILLed while they are all in progress.
_UPLOADER = r"""
import socket, sys
uploads = []
for n in range(10):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(b"\0\2up%d.bin\0octet\0" % n, ("127.0.0.1", 6969))
    packet, peer = s.recvfrom(100)
    assert packet == b"\0\4\0\0", packet
    for block in range(1, 11):
        s.sendto(b"\0\3" + block.to_bytes(2, "big") + b"u" * 512, peer)
        packet, _ = s.recvfrom(100)
        assert packet == b"\0\4" + block.to_bytes(2, "big"), packet
    uploads.append(s)
print("uploading", flush=True)
sys.stdin.read()
"""


@pytest_twisted.ensureDeferred
async def test_uploadsOfAKilledServerAreCleanedAtRestart(reactor: Any, tmp_path: Path) -> None:
    """
    #19 §3: twistd is SIGKILLed during ten uploads. No upload appears under its name; the
    ten temporary files stay. Once they are an hour old, a restart with
    --keep-stale-uploads reports them, and a plain restart removes them; a fresh one (a
    live upload of another process) and files that only look alike stay.
    """
    root = tmp_path / "root"
    root.mkdir()
    async with lossnet.namespace(reactor) as inNs:
        async with lossnet.server(reactor, inNs, root, "--writable") as server:
            uploader = BackgroundProcess(reactor, [*inNs, sys.executable, "-c", _UPLOADER])
            try:
                await uploader.waitFor(b"uploading", timeout=30)
                server.signal("KILL")
                out, err, code = await server.ended()
                assert code == -9
            finally:
                await uploader.stop()
        left = sorted(p for p in root.iterdir())
        assert len(left) == 10 and all(isTemporaryName(p.name) for p in left), left
        hourAgo = time.time() - 3700
        for path in left:
            os.utime(path, (hourAgo, hourAgo))
        fresh = root / ".up0.bin.0123456789ab.part"
        fresh.write_bytes(b"written just now")
        lookalike = root / ".notes.part"
        lookalike.write_bytes(b"an operator's")
        os.utime(lookalike, (hourAgo, hourAgo))
        async with lossnet.server(reactor, inNs, root, "-w", "--keep-stale-uploads") as server:
            await server.waitFor(rb"kept \(--keep-stale-uploads\) 10 unfinished uploads")
        assert all(p.exists() for p in left)
        async with lossnet.server(reactor, inNs, root, "-w") as server:
            await server.waitFor(rb"removed 10 unfinished uploads \(\d+ bytes\)")
    assert sorted(p.name for p in root.iterdir()) == sorted([fresh.name, lookalike.name])
