"""
Interop with the real iptux (Debian's package, 0.8.3), run headless under Xvfb.

iptux broadcasts when it starts, so the test builds its own two-host LAN:
network namespaces C{ipm<pid>a} (iptux, 10.78.N.1) and C{ipm<pid>b} (us,
10.78.N.2) joined by a veth pair, addresses with their broadcast set
(C{brd +}: iptux broadcasts to each interface's configured broadcast), no
default route.  Nothing leaves the namespaces, which are deleted afterwards.

Our side is L{tests.ipmsg.iptux_driver}, in namespace B: it starts first,
then iptux starts in A, and the driver checks, one JSON line per step:

  - iptux's BR_ENTRY broadcast reaches us, and iptux is in our table with
    its nick and group (from its config file);
  - iptux answers our BR_ENTRY with ANSENTRY (it has put us in its list);
  - a message we send is acknowledged by iptux's RECVMSG (and iptux logs it);
  - a file transfer driven without a click: iptux never auto-accepts an
    offer, but it answers its own "ask shared files" request (command 0xFF)
    with an offer of the files its config shares, which we fetch over TCP
    2425 and compare.

Needs root, iproute2, Xvfb and iptux (.ci/install-peers installs them):
without them it is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import requirePeer
from tests.process import BackgroundProcess

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DRIVER = Path(__file__).with_name("iptux_driver.py")


def _unavailable(reason: str) -> None:
    message = f"cannot run iptux in network namespaces: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI runs as root with .ci/install-peers done)")
    pytest.skip(message)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def lan() -> Iterator[tuple[str, str, str]]:
    """(namespace of iptux, namespace of ours, the /24 prefix)."""
    if os.geteuid() != 0:
        _unavailable("not running as root")
    requirePeer("ip")
    tag = f"ipm{os.getpid()}"
    a, b = f"{tag}a", f"{tag}b"
    prefix = f"10.78.{os.getpid() % 200}"
    created: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, host in ((a, 1), (b, 2)):
            _ip("-n", ns, "addr", "add", f"{prefix}.{host}/24", "brd", "+", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
    except (OSError, subprocess.SubprocessError) as e:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _unavailable(f"{e} {getattr(e, 'stderr', b'') or b''!r}")
    try:
        yield a, b, prefix
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def inside(ns: str, argv: list[str]) -> list[str]:
    return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", ns, *argv]


@pytest_twisted.ensureDeferred
async def test_iptux(reactor: Any, lan: tuple[str, str, str], tmp_path: Path) -> None:
    """iptux and we see each other, it acks our message, and we fetch a file it offers."""
    iptux, xvfb = requirePeer("iptux"), requirePeer("Xvfb")
    nsA, nsB, prefix = lan
    home, downloads = tmp_path / "home", tmp_path / "downloads"
    (home / ".iptux").mkdir(parents=True)
    downloads.mkdir()
    shared = home / "tux-notes.txt"
    shared.write_bytes("notes from tux, 企鹅\n".encode() * 200)
    config = home / ".iptux" / "config.json"
    config.write_text(json.dumps({
        "version": 1, "nick_name": "Tuxy", "belong_group": "penguins",
        "shared_file_list": [str(shared)], "archive_path": str(home),
    }))  # fmt: skip

    driver = BackgroundProcess(
        reactor, inside(nsB, [sys.executable, str(DRIVER), str(downloads), f"{prefix}.2"])
    )
    started: list[BackgroundProcess] = [driver]
    try:
        await driver.waitFor(rb'"step": "listening"', 20)
        display = BackgroundProcess(
            reactor, inside(nsA, [xvfb, "-displayfd", "1", "-nolisten", "tcp"])
        )
        started.append(display)
        number = (await display.waitFor(rb"(?m)^(\d+)$", 20)).group(1).decode()
        env = {"HOME": str(home), "DISPLAY": f":{number}", "NO_AT_BRIDGE": "1"}
        tux = BackgroundProcess(reactor, inside(nsA, [iptux, "-l", "DEBUG", "-c", str(config)]),
                                env=env)  # fmt: skip
        started.append(tux)
        out, err, code = await driver.ended(timeout=90)
    finally:
        for process in reversed(started):
            try:
                await process.stop(timeout=10)
            except Exception:
                pass
    assert code == 0, (out + err).decode(errors="replace")
    steps = {line["step"]: line for line in map(json.loads, out.decode().splitlines())}
    iptuxAddress = f"{prefix}.1"
    assert steps["br_entry"]["source"] == iptuxAddress
    assert steps["ansentry"]["source"] == iptuxAddress
    table = steps["table"]
    assert (table["nick"], table["group"]) == ("Tuxy", "penguins")
    assert table["version"].startswith("1_iptux") and table["encoding"] == "utf-8"
    assert steps["acked"]["packetNo"] > 0
    assert b"hello from udpsuite" in tux.output  # iptux's debug log of what it got
    assert steps["offer"] == {
        "step": "offer",
        "name": "tux-notes.txt",
        "size": shared.stat().st_size,
    }
    content = shared.read_bytes()
    assert steps["fetched"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert (downloads / "tux-notes.txt").read_bytes() == content
