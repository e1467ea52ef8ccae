"""
Forged broadcast sources, with real processes in a network namespace of the test's own.

The namespace has a veth pair with 10.96.7.1/24 (and a secondary 10.97.0.1/16), nothing
else and no route out.  A raw socket inside it sends datagrams whose source is forged to the
directed broadcast of a local subnet (10.96.7.255), the address Linux turns an answer into a
broadcast to the whole LAN.  No service may answer, admit or even try to send to it: the
code refuses, not the kernel (C{EACCES} would show as a send error in the log).  Needs root
and iproute2: without them the tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from tests.forge import forge
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.udpprobe import probe
from twisted_udpsuite.discovery.wire import Kind, Message, parse
from twisted_udpsuite.tftp.wire import ReadRequest

pytestmark = pytest.mark.integration

SERVER = "10.96.7.1"
FORGED = ("10.96.7.255", 40001)
SECONDARY = ("10.97.255.255", 40002)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def namespace() -> Iterator[list[str]]:
    """The command prefix that runs a program in the test's namespace (created, deleted)."""
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if ip is None or os.geteuid() != 0:
        message = "forged-source tests need root and iproute2 (network namespaces)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"udpsuite-hst{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "add", "h0", "type", "veth", "peer", "name", "h1")
        _ip("-n", name, "addr", "add", f"{SERVER}/24", "dev", "h0")
        _ip("-n", name, "addr", "add", "10.97.0.1/16", "dev", "h0")
        for link in ("h0", "h1"):
            _ip("-n", name, "link", "set", link, "up")
        yield [ip, "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


async def _serving(reactor: Any, namespace: list[str], path: str, *argv: str) -> BackgroundProcess:
    server = BackgroundProcess(
        reactor, [*namespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", *argv],
        path=path,
    )  # fmt: skip
    await server.waitFor(rb"listening on")
    return server


def assertUntouched(arrived: list[tuple[str, str, bytes]], server: BackgroundProcess) -> None:
    """
    Nothing reached the forged source, the server never tried to send there (the kernel
    would have refused: C{Permission denied}), and every line of its log that names a
    forged source says it was refused.
    """
    assert [a for a in arrived if a[0] == "source"] == []
    assert b"Permission denied" not in server.output
    for line in server.output.decode().splitlines():
        if "10.96.7.255" in line or "10.97.255.255" in line or "10.98.0.255" in line:
            assert re.search(r"ignored|dropped|not answered", line), line


@pytest_twisted.ensureDeferred
async def test_echo(reactor: Any, namespace: list[str], tmp_path: Any) -> None:
    """
    UDP echo does not echo to a local subnet's broadcast (primary or secondary address,
    nor one added after the server started), and still echoes a real client.
    """
    server = await _serving(reactor, namespace, str(tmp_path), "echo")
    try:
        for source in (FORGED, SECONDARY):
            arrived = await forge(reactor, namespace, source, (SERVER, 7007), b"ping")
            assert arrived == []
        _ip("-n", namespace[-1], "addr", "add", "10.98.0.1/24", "dev", "h0")
        await deferLater(reactor, 1.5, lambda: None)  # the addresses are read again after 1 s
        arrived = await forge(reactor, namespace, ("10.98.0.255", 40003), (SERVER, 7007), b"x")
        assert arrived == []
        source, answer = await probe(reactor, namespace, SERVER, 7007, SERVER, b"real")
        assert (source, answer) == (SERVER.encode(), b"real")
        await server.waitFor(rb"echoed datagram #1 from 10\.96\.7\.1")
    finally:
        await server.stop()
    assertUntouched(arrived, server)


@pytest_twisted.ensureDeferred
async def test_chatRoom(reactor: Any, namespace: list[str], tmp_path: Any) -> None:
    """The room does not admit a forged broadcast source: its members hear nothing of it."""
    server = await _serving(reactor, namespace, str(tmp_path), "chatroom")
    try:
        arrived = await forge(reactor, namespace, FORGED, (SERVER, 9999), b"JOIN forged\n",
                              member=(SERVER, b"JOIN real\n"))  # fmt: skip
        assert not any(b"forged" in data for _, _, data in arrived), arrived
    finally:
        await server.stop()
    assertUntouched(arrived, server)


def _probe() -> bytes:
    from twisted_udpsuite.discovery.protocol import newInstance

    return Message(Kind.PROBE, newInstance(), 7, maxDelay=0.0, padTo=256).toBytes()


@pytest.mark.parametrize("announce", [False, True])
@pytest_twisted.ensureDeferred
async def test_responder(reactor: Any, namespace: list[str], tmp_path: Any, announce: bool) -> None:
    """
    The discovery responder does not answer a probe from a local subnet's broadcast, even
    while it announces itself (the announces go out from a socket of their own).
    """
    extra = ["--announce", "30"] if announce else []
    server = await _serving(reactor, namespace, str(tmp_path), "responder", "--name", "r", *extra)
    try:
        arrived = await forge(reactor, namespace, FORGED, (SERVER, 9998), _probe())
        assert not [a for a in arrived if parse(a[2]).kind is Kind.ANSWER]
        source, answer = await probe(reactor, namespace, SERVER, 9998, SERVER, _probe())
        assert parse(answer).kind is Kind.ANSWER and parse(answer).name == "r"
    finally:
        await server.stop()
    assertUntouched(arrived, server)


@pytest_twisted.ensureDeferred
async def test_tftp(reactor: Any, namespace: list[str], tmp_path: Any) -> None:
    """The TFTP server starts no transfer for a request from a local subnet's broadcast."""
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    server = await _serving(reactor, namespace, str(tmp_path), "tftp", "--root", str(tmp_path))
    request = ReadRequest(b"hello.txt", "octet").toBytes()
    try:
        arrived = await forge(reactor, namespace, FORGED, (SERVER, 6969), request)
        assert arrived == []
        source, answer = await probe(reactor, namespace, SERVER, 6969, SERVER, request)
        assert answer == b"\x00\x03\x00\x01hello\n"
    finally:
        await server.stop()
    assertUntouched(arrived, server)


@pytest_twisted.ensureDeferred
async def test_readLocalBroadcasts(reactor: Any, namespace: list[str]) -> None:
    """Read from the kernel in the namespace: every subnet, the secondary one too."""
    script = "from twisted_udpsuite.addresses import readLocalBroadcasts as r; print(*r())"
    out, err, code = await runProcess(reactor, [*namespace, venvScript("python"), "-c", script])
    assert code == 0, err
    found = set(out.decode().split())
    assert {"10.96.7.255", "10.96.7.0", "10.97.255.255", "127.255.255.255"} <= found
