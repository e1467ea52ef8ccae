"""
A real PXE boot through our server (#18 §1): iPXE in QEMU gets its address and boot file
name from dnsmasq, fetches the boot file (an iPXE script) from our TFTP server, and the
script fetches and runs a second file; both print markers on the serial console, and the
server logs both transfers as completed. See L{tests.tftp.pxelab} for the lab.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.tftp.pxelab import IPXE_BANNER, pxeLab

pytestmark = pytest.mark.interop

BOOT_TIMEOUT = 60
"""Seconds from power-on to the second file's marker (about 20 under TCG on 2 cores)."""


def bootFiles(root: Path, token: str) -> None:
    """
    The boot file, an iPXE script that chains a second script named in it. The second
    is 64 KiB (45 blocks of iPXE's 1432 bytes) of comment lines, with the marker, a
    token new for each run, at its very end: iPXE runs a script only once it has all of
    it, so the marker proves every block arrived.
    """
    root.mkdir()
    (root / "boot.ipxe").write_text(
        "#!ipxe\necho UDPSUITE-BOOT-FILE\nchain tftp://${next-server}/second.ipxe || shell\n"
    )
    padding = "".join(f"# {os.urandom(24).hex()}\n" for _ in range(1300))
    (root / "second.ipxe").write_text(f"#!ipxe\n{padding}echo UDPSUITE-SECOND-{token}\n")


@pytest_twisted.ensureDeferred
async def test_ipxeBootsThroughOurServer(reactor: Any, tmp_path: Path) -> None:
    """
    iPXE PXE-boots from our server and runs the file its boot script names: the serial
    console shows both markers, and the server logged both transfers as completed, with
    the options iPXE negotiated (blksize 1432 and tsize; it has no windowsize).
    """
    token = os.urandom(8).hex()
    root = tmp_path / "root"
    bootFiles(root, token)
    async with pxeLab(reactor, tmp_path, root, "boot.ipxe") as lab:
        started = time.monotonic()
        client = lab.boot(reactor)
        try:
            await client.waitFor(re.escape(IPXE_BANNER), timeout=BOOT_TIMEOUT)
            await client.waitFor(b"UDPSUITE-BOOT-FILE", timeout=BOOT_TIMEOUT)
            await client.waitFor(f"UDPSUITE-SECOND-{token}".encode(), timeout=BOOT_TIMEOUT)
        except Exception as e:
            raise AssertionError(f"no boot: {lab.describe(client)}") from e
        finally:
            await client.stop()
        elapsed = time.monotonic() - started
        transfers = lab.transfers()
    print(
        f"PXE boot: second file ran {elapsed:.1f} s after power-on; iPXE negotiated",
        [(t["file"], t["options"]) for t in transfers],
    )
    assert [(t["file"], t["outcome"]) for t in transfers] == [
        ("boot.ipxe", "completed"),
        ("second.ipxe", "completed"),
    ]
    second = transfers[1]
    size = (root / "second.ipxe").stat().st_size
    assert second["bytes"] == size
    assert second["peer"][0].startswith("10.77.0.")
    # What iPXE (Debian's 1.0.0+git-20190125) negotiates: 1432-byte blocks, the size
    # first; no windowsize (iPXE has no RFC 7440).
    assert second["options"] == {"blksize": "1432", "tsize": str(size)}
