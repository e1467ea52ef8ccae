"""
curl uploads with one chosen packet lost, for real: in a network namespace whose nftables
rule drops exactly that packet once. Without help curl resends only on its own timer, 72 s
later; these check that the server gets it going again at once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp import lossnet

pytestmark = pytest.mark.interop

# Drops the first UDP datagram whose payload starts with these 4 bytes: "quota until N
# bytes" matches while the bytes it has seen, this packet's included, stay within N.
_RULES = """
table inet udpsuite_stall {{
    chain input {{
        type filter hook input priority 0;
        udp dport != 6969 @th,64,32 {payload:#010x} counter quota until {size} bytes drop
    }}
}}
"""


@pytest.mark.parametrize(
    ("lost", "payload", "size"),
    [
        ("DATA 1", 0x00030001, 600),  # a 544-byte datagram: the first only
        ("the final ACK", 0x00040003, 40),  # a 32-byte datagram: the first only
    ],
)
@pytest_twisted.ensureDeferred
async def test_curlUploadRecoversAtOnce(
    loopbackNamespace: list[str], reactor: Any, tmp_path: Path, lost: str, payload: int, size: int
) -> None:
    """
    A 1300-byte upload with curl's default options (tsize, blksize 512, timeout 6): if its
    DATA 1 is lost, ACK 0 nudges curl to send it again; if the final ACK 3 is lost, the
    server's unasked second copy ends the upload. Both well inside curl's 72 s.
    """
    curl = requirePeer("curl")
    nft = requirePeer("nft")
    rules = tmp_path / "rules.nft"
    rules.write_text(_RULES.format(payload=payload, size=size))
    out, err, code = await runProcess(reactor, [*loopbackNamespace, nft, "-f", str(rules)])
    assert code == 0, err
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(1300)
    (tmp_path / "up.bin").write_bytes(data)
    argv = [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
    argv += ["--port", "6969", "--interface", "127.0.0.1", "--root", str(root), "--writable"]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"tftp listening")
        started = reactor.seconds()
        upload = [curl, "-sS", "-T", str(tmp_path / "up.bin"), "tftp://127.0.0.1:6969/up.bin"]
        out, err, code = await runProcess(reactor, [*loopbackNamespace, *upload], timeout=60)
        elapsed = reactor.seconds() - started
        assert code == 0, err
        assert (root / "up.bin").read_bytes() == data
        assert elapsed < 10, f"{lost} lost: {elapsed:.1f} s"
        out, err, code = await runProcess(reactor, [*loopbackNamespace, nft, "list", "ruleset"])
        assert b"counter packets 2 " in out, out  # the one dropped, then the one that passed
    finally:
        await server.stop()


# Every eighth DATA that reaches a transfer port is dropped, the first at curl's DATA 2 (the
# counter counts only the packets that got as far as it: DATA to a transfer port).
_EVERY_EIGHTH_DATA = """
table inet udpsuite_end {
    chain input {
        type filter hook input priority 0;
        udp dport != 6969 @th,64,16 0x0003 numgen inc mod 8 == 1 counter drop
    }
}
"""


@pytest_twisted.ensureDeferred
async def test_curlUploadWithEveryEighthDataLost(reactor: Any, tmp_path: Path) -> None:
    """
    #19 §5: curl (blksize 1428, its resend interval 5 s with --max-time 100) loses DATA 2,
    10, 18, ...: each time the server's re-ACK, on measured round trips, makes curl resend
    at once. Before, the re-ACK timer sat at twice curl's 5 s and curl's own timer fired
    first for every loss: the upload was killed at 100 s.
    """
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(256 * 1024)
    (tmp_path / "up.bin").write_bytes(data)
    async with lossnet.namespace(reactor, _EVERY_EIGHTH_DATA) as inNs:
        async with lossnet.server(reactor, inNs, root, "--writable"):
            started = reactor.seconds()
            upload = [curl, "-sS", "--max-time", "100", "--tftp-blksize", "1428"]
            upload += ["-T", str(tmp_path / "up.bin"), lossnet.url("up.bin")]
            out, err, code = await runProcess(reactor, [*inNs, *upload], timeout=110)
            elapsed = reactor.seconds() - started
            ruleset, _, _ = await runProcess(
                reactor, [*inNs, requirePeer("nft"), "list", "ruleset"]
            )
    assert code == 0, err
    assert (root / "up.bin").read_bytes() == data
    dropped = int(re.search(rb"counter packets (\d+)", ruleset).group(1))  # type: ignore[union-attr]
    assert dropped >= 23, ruleset  # 184 blocks: 23 of them lost at least once
    assert elapsed < 15, f"{elapsed:.1f} s"


@pytest_twisted.ensureDeferred
async def test_tenCurlUploadsThroughTenPercentLoss(reactor: Any, tmp_path: Path) -> None:
    """#19 §5: ten curl uploads at once through 10% random loss each way, all whole in 60 s."""
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    files = {f"up{n}.bin": os.urandom(256 * 1024) for n in range(10)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    async with lossnet.namespace(reactor, lossnet.RANDOM_LOSS.format(every=10)) as inNs:
        async with lossnet.server(reactor, inNs, root, "--writable"):
            started = reactor.seconds()
            uploads = [
                Deferred.fromCoroutine(
                    runProcess(
                        reactor,
                        [*inNs, curl, "-sS", "--max-time", "100", "--tftp-blksize", "1428"]
                        + ["-T", str(tmp_path / name), lossnet.url(name)],
                        timeout=60,
                    )
                )
                for name in files
            ]
            results = await DeferredList(uploads, consumeErrors=True)
            elapsed = reactor.seconds() - started
    failed = [(name, r) for name, (ok, r) in zip(files, results, strict=True) if not ok or r[2]]
    assert not failed, failed
    for name, data in files.items():
        assert (root / name).read_bytes() == data, name
    assert elapsed < 60, f"{elapsed:.1f} s"
