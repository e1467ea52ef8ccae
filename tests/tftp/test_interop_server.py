"""
Our TFTP server against real clients on 127.0.0.1: curl, tftp-hpa's C{tftp} and atftp,
downloads and uploads, byte-identical, with and without options.

The server runs in-process on the real reactor; each client is a subprocess run through
L{getProcessOutputAndValue}, so the reactor keeps serving while it runs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService

pytestmark = pytest.mark.interop

TIMEOUT = 60


class Server:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    def file(self, name: str, size: int) -> bytes:
        data = os.urandom(size)
        (self.root / name).write_bytes(data)
        return data


@pytest_twisted.async_yield_fixture()
async def server(tmp_path: Path, reactor: Any) -> AsyncIterator[Server]:
    root = tmp_path / "root"
    root.mkdir()
    backend = FilesystemBackend(FilePath(str(root)), writable=True)
    service = TFTPService(
        backend, ServerPolicy(rate=None), port=0, interface="127.0.0.1", reactor=reactor
    )
    service.startService()
    yield Server(root, service.listeningPort.getHost().port)
    await service.stopService()


async def run(reactor: Any, argv: list[str], cwd: Path) -> tuple[bytes, bytes, int]:
    d = getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ), path=str(cwd))
    out, err, code = await d.addTimeout(TIMEOUT, reactor)
    return out, err, code


@pytest.mark.parametrize("size", [1, 511, 512, 513, 1428 * 3, 300_000])
@pytest.mark.parametrize("blksize", [None, 1428, 65464])
@pytest_twisted.ensureDeferred
async def test_curlDownload(
    server: Server, reactor: Any, tmp_path: Path, size: int, blksize: int | None
) -> None:
    curl = requirePeer("curl")
    data = server.file("f.bin", size)
    options = ["--tftp-blksize", str(blksize)] if blksize else []
    url = f"tftp://127.0.0.1:{server.port}/f.bin"
    out, err, code = await run(reactor, [curl, "-sS", *options, "-o", "got", url], tmp_path)
    assert code == 0, err
    assert (tmp_path / "got").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_curlUpload(server: Server, reactor: Any, tmp_path: Path) -> None:
    curl = requirePeer("curl")
    data = os.urandom(100_000)
    (tmp_path / "up").write_bytes(data)
    url = f"tftp://127.0.0.1:{server.port}/up.bin"
    out, err, code = await run(reactor, [curl, "-sS", "-T", "up", url], tmp_path)
    assert code == 0, err
    assert (server.root / "up.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_curlMissingFile(server: Server, reactor: Any, tmp_path: Path) -> None:
    curl = requirePeer("curl")
    url = f"tftp://127.0.0.1:{server.port}/missing"
    out, err, code = await run(reactor, [curl, "-sS", "-o", "got", url], tmp_path)
    assert code == 68, err  # curl's "TFTP: file not found"


@pytest.mark.parametrize("size", [0, 1, 512, 513, 200_000])
@pytest_twisted.ensureDeferred
async def test_tftpHpaGetAndPut(server: Server, reactor: Any, tmp_path: Path, size: int) -> None:
    tftp = requirePeer("tftp")
    data = server.file("f.bin", size)
    argv = [tftp, "127.0.0.1", str(server.port), "-m", "binary", "-c", "get", "f.bin", "got"]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (tmp_path / "got").read_bytes() == data
    argv = [tftp, "127.0.0.1", str(server.port), "-m", "binary", "-c", "put", "got", "up.bin"]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (server.root / "up.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_tftpHpaNetascii(server: Server, reactor: Any, tmp_path: Path) -> None:
    tftp = requirePeer("tftp")
    text = b"one\ntwo\r\nthree\rfour\n" * 100
    (server.root / "t.txt").write_bytes(text)
    argv = [tftp, "127.0.0.1", str(server.port), "-m", "netascii", "-c", "get", "t.txt", "got"]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (tmp_path / "got").read_bytes() == text
    argv = [tftp, "127.0.0.1", str(server.port), "-m", "netascii", "-c", "put", "got", "up.txt"]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (server.root / "up.txt").read_bytes() == text


@pytest.mark.parametrize("size", [0, 1428, 1428 * 8, 1_000_000])
@pytest_twisted.ensureDeferred
async def test_atftpWindowed(server: Server, reactor: Any, tmp_path: Path, size: int) -> None:
    atftp = requirePeer("atftp")
    data = server.file("f.bin", size)
    options = ["--option", "blksize 1428", "--option", "tsize", "--option", "windowsize 8"]
    argv = [atftp, *options, "-g", "-r", "f.bin", "-l", "got", "127.0.0.1", str(server.port)]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (tmp_path / "got").read_bytes() == data
    argv = [atftp, *options, "-p", "-l", "got", "-r", "up.bin", "127.0.0.1", str(server.port)]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (server.root / "up.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_atftpNoOptions(server: Server, reactor: Any, tmp_path: Path) -> None:
    atftp = requirePeer("atftp")
    data = server.file("f.bin", 70_000)
    argv = [atftp, "-g", "-r", "f.bin", "-l", "got", "127.0.0.1", str(server.port)]
    out, err, code = await run(reactor, argv, tmp_path)
    assert code == 0, (out, err)
    assert (tmp_path / "got").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_dualStackInterface(reactor: Any, tmp_path: Path) -> None:
    """C{--interface ::}: IPv6 clients and IPv4 clients (V4-mapped) on one socket."""
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(50_000)
    (root / "f").write_bytes(data)
    backend = FilesystemBackend(FilePath(str(root)))
    service = TFTPService(backend, port=0, interface="::", reactor=reactor)
    try:
        service.startService()
    except Exception as e:  # no IPv6 on this machine
        pytest.skip(f"cannot bind '::': {e}")
    port = service.listeningPort.getHost().port
    try:
        for host in ("[::1]", "127.0.0.1"):
            url = f"tftp://{host}:{port}/f"
            out, err, code = await run(reactor, [curl, "-sS", "-o", "got", url], tmp_path)
            assert code == 0, err
            assert (tmp_path / "got").read_bytes() == data
    finally:
        await service.stopService()


# A real lossy network: a namespace whose loopback drops a random share of UDP packets
# (nftables numgen; netem is not available here). Dropped on input: a drop on output would
# fail the sender's sendto() with EPERM instead of losing the packet. Needs root, ip, nft.

_LOSS_RULES = """
table inet udpsuite_loss {
    chain input {
        type filter hook input priority 0;
        meta l4proto udp numgen random mod 20 == 0 drop
    }
}
"""


@pytest_twisted.async_yield_fixture()
async def lossyNamespace(reactor: Any) -> AsyncIterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ip = requirePeer("ip")
    nft = requirePeer("nft")
    name = f"udpsuite-tftp-{os.getpid()}"
    out, err, code = await run(reactor, [ip, "netns", "add", name], Path("/"))
    if code != 0:
        pytest.skip(f"cannot create a network namespace: {err.decode(errors='replace')}")
    try:
        for argv in ([ip, "-n", name, "link", "set", "lo", "up"],):
            out, err, code = await run(reactor, argv, Path("/"))
            assert code == 0, err
        rules = Path(f"/tmp/{name}.nft")
        rules.write_text(_LOSS_RULES)
        out, err, code = await run(
            reactor, [ip, "netns", "exec", name, nft, "-f", str(rules)], Path("/")
        )
        rules.unlink()
        assert code == 0, err
        yield name
    finally:
        await run(reactor, [ip, "netns", "delete", name], Path("/"))


@pytest_twisted.ensureDeferred
async def test_lossyNamespace(lossyNamespace: str, reactor: Any, tmp_path: Path) -> None:
    """
    5% loss each way on a real loopback: curl's downloads arrive whole.

    Left out: curl uploads (after the OACK curl resends a lost DATA only after 72 s, and a
    resent OACK makes it shift the file, so a lost DATA 1 stalls the upload whatever the
    server does), and atftp's client (it ignores a repeated DATA and sometimes aborts with
    "unknown error" under loss; not yet understood).
    """
    from tests.process import BackgroundProcess, venvScript

    ip = requirePeer("ip")
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(300_000)
    (root / "f").write_bytes(data)
    inNs = [ip, "netns", "exec", lossyNamespace]
    serve = ["udpsuite", "tftp", "--port", "6969", "--interface", "127.0.0.1"]
    argv = [*inNs, venvScript("twistd"), "-n", "--pidfile=", *serve, "--root", str(root), "-w"]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"tftp listening")
        url = "tftp://127.0.0.1:6969/f"
        for options in ([], ["--tftp-blksize", "1428"]):
            argv = [*inNs, curl, "-sS", *options, "-o", "got", url]
            out, err, code = await run(reactor, argv, tmp_path)
            assert code == 0, err
            assert (tmp_path / "got").read_bytes() == data
    finally:
        await server.stop()
