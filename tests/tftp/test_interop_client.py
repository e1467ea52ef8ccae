"""
Our TFTP client against real servers on 127.0.0.1: tftp-hpa's in.tftpd and atftpd, started
by the tests on free high ports. Downloads and uploads must be byte-identical, with and
without options (in.tftpd has no windowsize: the client must still work against it).
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.process import BackgroundProcess
from tests.tftp import peers
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.client import get, put

pytestmark = pytest.mark.interop

SIZES = [0, 1, 511, 512, 513, 100_000]


@dataclass
class Peer:
    name: str
    port: int
    root: Path
    process: BackgroundProcess


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


def _argv(name: str, port: int, root: Path) -> list[str]:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    if name == "in.tftpd":
        return [
            peers.inTftpd(),
            "--foreground",
            "--address",
            f"127.0.0.1:{port}",
            "--secure",
            "--create",
            "--permissive",
            "--user",
            user,
            "--umask",
            "022",
            str(root),
        ]
    return [
        peers.atftpd(),
        "--daemon",
        "--no-fork",
        "--port",
        str(port),
        "--bind-address",
        "127.0.0.1",
        "--user",
        f"{user}.{group}",
        "--logfile",
        "-",
        "--verbose=5",
        str(root),
    ]


async def _waitUntilServing(reactor: Any, port: int, process: BackgroundProcess) -> None:
    """Ask for a missing file until the server says so: then it is listening."""
    for _ in range(200):
        try:
            await get(
                reactor, ("127.0.0.1", port), "no-such-file", io.BytesIO(), tsize=False
            ).addTimeout(0.05, reactor)
        except errors.FileNotFound:
            return
        except Exception:
            continue  # not listening yet: the probe was cancelled (or refused)
    raise RuntimeError(f"server on port {port} never answered: {process.output!r}")


@pytest.fixture(params=["in.tftpd", "atftpd"])
def peerName(request: Any) -> str:
    # Resolve (and fetch) the program before the reactor has work: this may block.
    if request.param == "in.tftpd":
        peers.inTftpd()
    else:
        peers.atftpd()
    return request.param  # type: ignore[no-any-return]


@pytest_twisted.async_yield_fixture()
async def peer(reactor: Any, peerName: str, tmp_path: Path) -> AsyncIterator[Peer]:
    root = tmp_path / "root"
    root.mkdir()
    root.chmod(0o777)
    port = freeUDPPort()
    process = BackgroundProcess(reactor, _argv(peerName, port, root))
    try:
        await _waitUntilServing(reactor, port, process)
        yield Peer(peerName, port, root, process)
    finally:
        await process.stop()


def content(size: int) -> bytes:
    return os.urandom(size)


@pytest.mark.parametrize("size", SIZES)
@pytest_twisted.ensureDeferred
async def test_downloadPlain(reactor: Any, peer: Peer, tmp_path: Path, size: int) -> None:
    """RFC 1350 only (no options at all)."""
    data = content(size)
    (peer.root / "f.bin").write_bytes(data)
    target = tmp_path / "got.bin"
    result = await get(reactor, ("127.0.0.1", peer.port), "f.bin", str(target), tsize=False)
    assert target.read_bytes() == data
    assert result.bytes == size and result.accepted == {}


@pytest.mark.parametrize(
    "options",
    [
        {"blksize": 1428},
        {"blksize": 8192, "windowsize": 8},
        {"blksize": 65464},
        {"windowsize": 16, "timeout": 2},
    ],
)
@pytest_twisted.ensureDeferred
async def test_downloadWithOptions(
    reactor: Any, peer: Peer, tmp_path: Path, options: dict[str, int]
) -> None:
    data = content(300_001)
    (peer.root / "f.bin").write_bytes(data)
    target = tmp_path / "got.bin"
    d = get(reactor, ("127.0.0.1", peer.port), "f.bin", str(target), **options)  # type: ignore[arg-type]
    result = await d.addTimeout(30, reactor)
    assert target.read_bytes() == data
    assert result.options.tsize == len(data)
    assert result.options.blksize == options.get("blksize", 512)
    if peer.name == "in.tftpd":
        assert result.options.windowsize == 1  # no RFC 7440 in tftp-hpa
    else:
        assert result.options.windowsize == options.get("windowsize", 1)


@pytest.mark.parametrize("size", SIZES)
@pytest_twisted.ensureDeferred
async def test_uploadPlain(reactor: Any, peer: Peer, size: int) -> None:
    data = content(size)
    d = put(reactor, ("127.0.0.1", peer.port), data, "up.bin", tsize=False)
    result = await d.addTimeout(30, reactor)
    assert result.bytes == size
    await _settled(reactor, peer.root / "up.bin", data)
    assert (peer.root / "up.bin").read_bytes() == data


@pytest.mark.parametrize(
    "options", [{"blksize": 1428}, {"blksize": 8192, "windowsize": 4}, {"blksize": 65464}]
)
@pytest_twisted.ensureDeferred
async def test_uploadWithOptions(reactor: Any, peer: Peer, options: dict[str, int]) -> None:
    data = content(200_003)
    d = put(reactor, ("127.0.0.1", peer.port), data, "up.bin", **options)  # type: ignore[arg-type]
    result = await d.addTimeout(30, reactor)
    assert result.options.blksize == options["blksize"]
    await _settled(reactor, peer.root / "up.bin", data)
    assert (peer.root / "up.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_netasciiRoundTrip(reactor: Any, peer: Peer, tmp_path: Path) -> None:
    """Text up in netascii and back down in netascii is unchanged."""
    text = b"line one\nline two\r\nbare\rcr\n" * 100
    await put(reactor, ("127.0.0.1", peer.port), text, "t.txt", mode="netascii").addTimeout(
        30, reactor
    )
    await _settled(reactor, peer.root / "t.txt", text)  # stored in the local form: the same
    assert (peer.root / "t.txt").read_bytes() == text
    target = tmp_path / "t.txt"
    await get(reactor, ("127.0.0.1", peer.port), "t.txt", str(target), mode="netascii").addTimeout(
        30, reactor
    )
    assert target.read_bytes() == text


@pytest_twisted.ensureDeferred
async def test_missingFile(reactor: Any, peer: Peer, tmp_path: Path) -> None:
    with pytest.raises(errors.FileNotFound):
        await get(reactor, ("127.0.0.1", peer.port), "nope", str(tmp_path / "x")).addTimeout(
            10, reactor
        )
    assert not (tmp_path / "x").exists()


async def _settled(reactor: Any, path: Path, data: bytes) -> None:
    """
    The server may still be writing the file when our last ACK arrives: atftpd ACKs the
    final block before it closes the file, and in netascii it writes a CR at once and
    overwrites it when an LF follows. Wait (bounded) until the file holds C{data}; the
    caller asserts it.
    """
    from twisted.internet.task import deferLater

    for _ in range(100):
        if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
        await deferLater(reactor, 0.02)


@pytest_twisted.ensureDeferred
async def test_commandLine(reactor: Any, peer: Peer, tmp_path: Path) -> None:
    """The installed C{udpsuite tftp} script: put then get, exit 0; a missing file exits 1."""
    from tests.process import runProcess, venvScript

    data = content(70_000)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    target = f"127.0.0.1:{peer.port}"
    udpsuite = venvScript("udpsuite")
    _, err, code = await runProcess(
        reactor, [udpsuite, "tftp", "put", target, str(source), "up.bin", "-b", "1428"]
    )
    assert code == 0, err
    await _settled(reactor, peer.root / "up.bin", data)
    _, err, code = await runProcess(
        reactor, [udpsuite, "tftp", "get", target, "up.bin", str(tmp_path / "back.bin")]
    )
    assert code == 0, err
    assert (tmp_path / "back.bin").read_bytes() == data
    out, err, code = await runProcess(
        reactor, [udpsuite, "tftp", "get", target, "missing", str(tmp_path / "m")]
    )
    assert code == 1 and out == b""
    assert err.decode().startswith("udpsuite tftp: get missing (127.0.0.1:")
    assert err.count(b"\n") == 1
    assert not (tmp_path / "m").exists()


@pytest_twisted.ensureDeferred
async def test_ipv6WithInTftpd(reactor: Any, tmp_path: Path) -> None:
    """Over ::1 (atftpd 0.8 binds IPv4 only, so tftp-hpa alone is tried)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    root = tmp_path / "root"
    root.mkdir()
    data = content(200_000)
    (root / "f.bin").write_bytes(data)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    argv = _argv("in.tftpd", port, root)
    argv[argv.index("--address") + 1] = f"[::1]:{port}"
    process = BackgroundProcess(reactor, argv)
    try:
        for _ in range(200):
            try:
                await get(reactor, ("::1", port), "nope", io.BytesIO()).addTimeout(0.05, reactor)
            except errors.FileNotFound:
                break
            except Exception:
                continue
        target = tmp_path / "got.bin"
        d = get(reactor, ("::1", port), "f.bin", str(target), blksize=1428)
        result = await d.addTimeout(30, reactor)
        assert target.read_bytes() == data and result.options.blksize == 1428
        d = put(reactor, ("::1", port), data, "up.bin", blksize=1428)
        await d.addTimeout(30, reactor)
        await _settled(reactor, root / "up.bin", data)
        assert (root / "up.bin").read_bytes() == data
    finally:
        await process.stop()
