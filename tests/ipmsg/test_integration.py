"""
C{twistd -n udpsuite ipmsg} on real sockets, inside a loopback-only network
namespace of the test's own (the service broadcasts its presence at start).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.process import BackgroundProcess, runProcess, venvScript

pytestmark = pytest.mark.integration

_SENDER = """
import signal
import sys
from twisted.internet import task
from twisted.python.filepath import FilePath
from twisted_udpsuite.ipmsg import FileOffers, FileServerFactory, IPMsgPeer

async def main(reactor, path, root):
    offers = FileOffers(reactor)
    peer = IPMsgPeer("alice", "ops", reactor, user="alice", broadcastTargets=[], offers=offers)
    udp = reactor.listenUDP(2425, peer, interface="127.0.0.2")
    tcp = reactor.listenTCP(2425, FileServerFactory(offers, reactor), interface="127.0.0.2")
    await peer.sendMessage(("127.0.0.1", 2425), "hello box").addTimeout(10, reactor)
    await peer.offerFiles(("127.0.0.1", 2425), [FilePath(path)], "the report").addTimeout(
        10, reactor)
    target = FilePath(root).child(FilePath(path).basename())
    for _ in range(100):
        if target.exists():
            break
        await task.deferLater(reactor, 0.1, lambda: None)
    print("landed" if target.exists() else "missing", flush=True)
    peer.leave()
    await tcp.stopListening()
    await udp.stopListening()

task.react(lambda reactor: main(reactor, *sys.argv[1:3]))
"""


@pytest_twisted.ensureDeferred
async def test_dropBoxUnderTwistd(
    reactor: Any, loopbackNamespace: list[str], tmp_path: Path
) -> None:
    """
    The service acknowledges and logs a message, fetches an offered file into
    --root (whole, under its name), and stops cleanly on SIGTERM.
    """
    root = tmp_path / "root"
    root.mkdir()
    report = tmp_path / "report.txt"
    report.write_bytes(b"numbers " * 10_000)
    service = BackgroundProcess(reactor, [*loopbackNamespace, venvScript("twistd"), "-n",
        "--pidfile=", "udpsuite", "ipmsg", "--interface", "127.0.0.1", "--nick", "box",
        "--root", str(root), "--accept-files"])  # fmt: skip
    try:
        await service.waitFor(rb"ipmsg files listening on 127.0.0.1:2425 \(TCP\)")
        out, err, code = await runProcess(
            reactor,
            [*loopbackNamespace, sys.executable, "-c", _SENDER, str(report), str(root)],
            timeout=40,
        )
        assert code == 0 and out.strip() == b"landed", (out, err)
        assert (root / "report.txt").read_bytes() == report.read_bytes()
        await service.waitFor(rb"ipmsg received report\.txt from 127\.0\.0\.2: 80000 bytes")
    finally:
        _, _, status = await service.stop()
    log = service.output.decode()
    assert "ipmsg message from alice at 127.0.0.2: hello box" in log
    assert "ipmsg message from alice at 127.0.0.2: the report [files: report.txt" in log
    assert status in (0, -signal.SIGTERM) and "Traceback" not in log  # twistd ends by its signal
