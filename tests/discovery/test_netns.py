"""
Discovery over real sockets: real broadcasts between network namespaces.

The test builds its own small LAN: a bridge in one namespace and three hosts
(namespaces A, B, C) joined to it by veth pairs, with private addresses
(10.77.N.0/24) and IPv6 link-local addresses that exist only inside those
namespaces, and no default route (so 255.255.255.255 is unreachable and the
directed broadcast must do the work, as on many real hosts).  Responders run
under twistd in B and C; the discoverer runs in A.  Nothing leaves the
namespaces, which are deleted afterwards.  Needs root and iproute2: without
them the tests are skipped, except in CI (C{CI} set), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted

from tests.process import BackgroundProcess, runProcess, venvScript

pytestmark = pytest.mark.integration

PORT = 9998


@dataclass
class Lan:
    prefix: str  # "10.77.N"
    a: str
    b: str
    c: str

    def run(self, ns: str, argv: list[str]) -> list[str]:
        ip = shutil.which("ip") or "/usr/sbin/ip"
        return [ip, "netns", "exec", ns, *argv]


def _unavailable(reason: str) -> None:
    message = f"cannot create network namespaces: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run as root with iproute2 installed)")
    pytest.skip(message)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        _unavailable("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        _unavailable("not running as root")
    tag = f"udpd{os.getpid() % 100000}"
    bridge = f"{tag}br"
    names = [f"{tag}{x}" for x in "abc"]
    subnet = 100 + os.getpid() % 150
    created: list[str] = []
    try:
        for ns in [bridge, *names]:
            _ip("netns", "add", ns)
            created.append(ns)
            # No duplicate-address detection: link-local addresses are usable at once.
            for knob in ("all", "default"):
                _ip("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{knob}.accept_dad=0")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", bridge, "link", "set", "br0", "up")
        for i, ns in enumerate(names):
            _ip("link", "add", "eth0", "netns", ns, "type", "veth",
                "peer", "name", f"port{i}", "netns", bridge)  # fmt: skip
            _ip("-n", bridge, "link", "set", f"port{i}", "master", "br0")
            _ip("-n", bridge, "link", "set", f"port{i}", "up")
            _ip("-n", ns, "addr", "add", f"10.77.{subnet}.{i + 1}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
    except (OSError, subprocess.SubprocessError) as e:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        detail = getattr(e, "stderr", b"") or b""
        _unavailable(f"{e} {detail.decode(errors='replace').strip()}")
    try:
        yield Lan(f"10.77.{subnet}", *names)
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def twistdResponder(name: str, *extra: str) -> list[str]:
    return [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "responder",
            "--name", name, "--port", str(PORT), *extra]  # fmt: skip


@pytest_twisted.async_yield_fixture()
async def responders(reactor: Any, lan: Lan) -> Any:
    """beta in B on all IPv4 interfaces; gamma in C on '::' (IPv4 and IPv6)."""
    started = [
        BackgroundProcess(
            reactor, lan.run(lan.b, twistdResponder("beta", "--service", "web/tcp:80"))
        ),
        BackgroundProcess(reactor, lan.run(lan.c, twistdResponder("gamma", "--interface", "::"))),
    ]
    try:
        for process, name in zip(started, ("beta", "gamma"), strict=True):
            await process.waitFor(rb"responder '" + name.encode() + rb"' listening")
        yield started
    finally:
        for process in started:
            await process.stop()


@pytest_twisted.ensureDeferred
async def test_broadcastFindsResponders(reactor: Any, lan: Lan, responders: Any) -> None:
    """
    udpsuite discover in A finds both responders once each, through the
    directed broadcast (A has no default route, so 255.255.255.255 fails).
    """
    out, err, code = await runProcess(
        reactor, lan.run(lan.a, [venvScript("udpsuite"), "discover", "--timeout", "3"])
    )
    lines = sorted(out.decode().splitlines())
    assert code == 0, (out, err)
    assert lines == [
        f"{lan.prefix}.2:{PORT}  beta  web/tcp:80",
        f"{lan.prefix}.3:{PORT}  gamma  -",
    ]
    assert err.decode().endswith("2 responders found\n")


_IPV6_SCRIPT = """
from twisted.internet import task
from twisted_udpsuite.discovery.protocol import discover

def main(reactor):
    d = discover(reactor, %d, timeout=3, interfaces=[], limitedBroadcast=False, ipv6=True)
    d.addCallback(lambda found: [print(r.name, r.address[0], flush=True) for r in found])
    return d

task.react(main)
"""


@pytest_twisted.ensureDeferred
async def test_ipv6AllNodes(reactor: Any, lan: Lan, responders: Any) -> None:
    """Over IPv6 only (ff02::1 on eth0), the responder bound to '::' answers."""
    out, err, code = await runProcess(
        reactor, lan.run(lan.a, [sys.executable, "-c", _IPV6_SCRIPT % PORT])
    )
    assert code == 0, (out, err)
    [line] = out.decode().splitlines()
    name, address = line.split()
    assert name == "gamma" and address.startswith("fe80::")


_PRESENCE_SCRIPT = """
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted_udpsuite.discovery import wire
from twisted_udpsuite.discovery.protocol import PeerTable

class Table(PeerTable):
    def datagramReceived(self, data, addr):
        print("got", wire.parse(data).kind.name, flush=True)
        super().datagramReceived(data, addr)

def main(reactor):
    done = Deferred()
    def left(peer):
        print("left", peer.name, flush=True)
        done.callback(None)
    table = Table(reactor, onJoin=lambda p: print("joined", p.name, p.address[0], flush=True),
                  onLeave=left)
    reactor.listenUDP(%d, table, interface="")
    return done.addTimeout(30, reactor)

task.react(main)
"""


@pytest_twisted.ensureDeferred
async def test_announceAndGoodbye(reactor: Any, lan: Lan) -> None:
    """
    A responder announcing every 2 s joins A's peer table; stopping it says
    goodbye, so it leaves at once, not when its 6 s lifetime ends.
    """
    table = BackgroundProcess(
        reactor, lan.run(lan.a, [sys.executable, "-c", _PRESENCE_SCRIPT % PORT])
    )
    announcer = BackgroundProcess(
        reactor, lan.run(lan.b, twistdResponder("delta", "--announce", "2"))
    )
    try:
        await table.waitFor(rb"joined delta " + lan.prefix.encode() + rb"\.2")
        # The second announce comes from twistd's running reactor: only from
        # then on does SIGTERM stop the services (and send the goodbye)
        # rather than kill the process outright.
        await table.waitFor(rb"(?s)got ANNOUNCE.*got ANNOUNCE")
        await announcer.stop()
        try:
            await table.waitFor(rb"got GOODBYE\s+left delta", timeout=3)
        except Exception:
            raise AssertionError((table.output, announcer.output)) from None
    finally:
        await announcer.stop()
        await table.stop()


@pytest_twisted.ensureDeferred
async def test_everyServiceDescribed(reactor: Any, lan: Lan, tmp_path: Any) -> None:
    """'twistd -n udpsuite' with no subcommand starts a responder that lists the others."""
    everything = BackgroundProcess(
        reactor,
        lan.run(lan.c, [venvScript("twistd"), "-n", "--pidfile=", "udpsuite"]),
        path=str(tmp_path),
    )
    try:
        await everything.waitFor(rb"responder '.*' listening")
        out, err, code = await runProcess(
            reactor, lan.run(lan.a, [venvScript("udpsuite"), "discover", "--timeout", "2"])
        )
    finally:
        await everything.stop()
    assert code == 0, (out, err)
    [line] = out.decode().splitlines()
    assert line.startswith(f"{lan.prefix}.3:{PORT}  ")
    for service in ("echo/udp:7007", "echo/tcp:7007", "files/tcp:8000", "tftp/udp:6969"):
        assert service in line.split()


def test_unavailableSkipsOrFailsInCI(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without namespaces the tests skip with the reason, but fail when CI is set."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not running as root"):
        _unavailable("not running as root")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run as root"):
        _unavailable("not running as root")
