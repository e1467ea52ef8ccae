"""
curl uploads with one chosen packet lost, for real: in a network namespace whose nftables
rule drops exactly that packet once. Without help curl resends only on its own timer, 72 s
later; these check that the server gets it going again at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript

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
