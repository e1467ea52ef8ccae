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
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from tests.process import runProcess
from tests.tftp import lossnet
from twisted_udpsuite.tftp.backend import FilesystemBackend
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService

pytestmark = pytest.mark.interop

TIMEOUT = 60
_ATFTP_WINDOW = ["--option", "blksize 1428", "--option", "windowsize 8", "--option", "tsize"]


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
    options = _ATFTP_WINDOW
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


async def _lossyServer(reactor: Any, namespace: str, root: Path) -> tuple[Any, list[str], str]:
    """Our server (twistd, the installed copy) in the namespace: (process, argv prefix, url)."""
    from tests.process import BackgroundProcess, venvScript

    inNs = [requirePeer("ip"), "netns", "exec", namespace]
    serve = ["udpsuite", "tftp", "--port", "6969", "--interface", "127.0.0.1"]
    argv = [*inNs, venvScript("twistd"), "-n", "--pidfile=", *serve, "--root", str(root), "-w"]
    server = BackgroundProcess(reactor, argv)
    try:
        await server.waitFor(b"tftp listening")
    except BaseException:
        await server.stop()
        raise
    return server, inNs, "tftp://127.0.0.1:6969"


async def _allOk(reactor: Any, runs: dict[str, tuple[list[str], float]], cwd: Path) -> None:
    """Run the clients at once (each bounded by its own timeout); all must exit 0."""
    from tests.process import runProcess

    async def one(argv: list[str], timeout: float) -> tuple[bytes, bytes, int]:
        return await runProcess(reactor, argv, path=str(cwd), timeout=timeout)

    names = list(runs)
    results = await DeferredList(
        [Deferred.fromCoroutine(one(*runs[name])) for name in names], consumeErrors=True
    )
    failed = {
        name: (value if ok else repr(value))
        for name, (ok, value) in zip(names, results, strict=True)
        if not ok or value[2] != 0
    }
    assert not failed, failed


# Real recovery times under loss (read from the clients' source, checked with traces):
# curl 7.88 resends a block after an OACK or ACK only on its own per-block timer when it
# gets no out-of-date ACK: 72 s with no --max-time ("set timeouts for state 2; Total 0,
# retry 72"). That is a lost DATA 1 (we never resend the OACK) or a lost final ACK; one of
# each, or one lost twice, is 146 s. atftp re-ACKs a repeated DATA once, then waits for 5 s
# (1 s with --tftp-timeout 1) without any packet before re-ACKing again: about 11 s (2.6 s)
# per such loss, as our resends back off.
_CURL_UPLOAD_TIMEOUT = 2 * 75 + 30


@pytest_twisted.ensureDeferred
async def test_lossyNamespace(lossyNamespace: str, reactor: Any, tmp_path: Path) -> None:
    """
    5% loss each way on a real loopback: curl's downloads and uploads arrive whole. The
    clients run at the same time, so the test takes as long as the slowest.
    """
    curl = requirePeer("curl")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(300_000)
    (root / "f").write_bytes(data)
    (tmp_path / "up").write_bytes(data)
    server, inNs, url = await _lossyServer(reactor, lossyNamespace, root)
    try:
        get = [*inNs, curl, "-sS", "-o"]
        runs = {
            "get": ([*get, "got", f"{url}/f"], 60.0),
            "get blksize 1428": ([*get, "got1428", "--tftp-blksize", "1428", f"{url}/f"], 60.0),
            "put": ([*inNs, curl, "-sS", "-T", "up", f"{url}/up.bin"], _CURL_UPLOAD_TIMEOUT),
        }
        await _allOk(reactor, runs, tmp_path)
        assert (tmp_path / "got").read_bytes() == data
        assert (tmp_path / "got1428").read_bytes() == data
        assert (root / "up.bin").read_bytes() == data
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_lossyNamespaceAtftp(lossyNamespace: str, reactor: Any, tmp_path: Path) -> None:
    """
    5% loss each way: atftp's downloads and uploads arrive whole, lock-step (with its
    default 5 s timer and with --tftp-timeout 1) and windowed.
    """
    atftp = requirePeer("atftp")
    root = tmp_path / "root"
    root.mkdir()
    small = os.urandom(100_000)
    big = os.urandom(300_000)
    (root / "small").write_bytes(small)
    (root / "big").write_bytes(big)
    (tmp_path / "big").write_bytes(big)
    server, inNs, _ = await _lossyServer(reactor, lossyNamespace, root)
    host = ["127.0.0.1", "6969"]
    window = _ATFTP_WINDOW
    try:
        runs = {
            "get": ([*inNs, atftp, "-g", "-r", "small", "-l", "got", *host], 120.0),
            "get, 1 s timer": (
                [*inNs, atftp, "--tftp-timeout", "1", "-g", "-r", "big", "-l", "got1", *host],
                120.0,
            ),
            "get windowed": ([*inNs, atftp, *window, "-g", "-r", "big", "-l", "gotw", *host], 60.0),
            "put": ([*inNs, atftp, "-p", "-l", "big", "-r", "up.bin", *host], 120.0),
            "put windowed": (
                [*inNs, atftp, *window, "-p", "-l", "big", "-r", "upw.bin", *host],
                60.0,
            ),
        }
        await _allOk(reactor, runs, tmp_path)
        assert (tmp_path / "got").read_bytes() == small
        assert (tmp_path / "got1").read_bytes() == big
        assert (tmp_path / "gotw").read_bytes() == big
        assert (root / "up.bin").read_bytes() == big
        assert (root / "upw.bin").read_bytes() == big
    finally:
        await server.stop()


# atftp 0.8 aborts a download on a second OACK ("tftp: unexpected OACK", and ERROR 0 to
# us). Our OACK is therefore resent on our timer only after OACK_QUIET (12 s): past two of
# atftp's own resends of a lost ACK 0, 5 s apart (#19 §4). Here the first two ACK 0s are
# dropped ("quota until 72 bytes": two 32-byte datagrams).
_LOSE_TWO_ACK_0 = """
table inet udpsuite_end {
    chain input {
        type filter hook input priority 0;
        udp dport != 6969 @th,64,32 0x00040000 counter quota until 72 bytes drop
    }
}
"""


@pytest_twisted.ensureDeferred
async def test_atftpWindowedSurvivesLostAck0s(reactor: Any, tmp_path: Path) -> None:
    """
    atftp's ACK of our OACK is lost twice: we stay quiet, atftp resends it after 5 and 10 s,
    and the download completes (a resend of the OACK at 1 s, or at 8 s, made atftp abort).
    """
    atftp = requirePeer("atftp")
    root, data = lossnet.servedFile(tmp_path, "f", 300_000)
    window = _ATFTP_WINDOW
    async with lossnet.namespace(reactor, _LOSE_TWO_ACK_0) as inNs:
        async with lossnet.server(reactor, inNs, root):
            started = reactor.seconds()
            argv = [*inNs, atftp, *window, "-g", "-r", "f", "-l", str(tmp_path / "got")]
            out, err, code = await runProcess(reactor, [*argv, "127.0.0.1", "6969"], timeout=30)
            elapsed = reactor.seconds() - started
            nft = [*inNs, requirePeer("nft"), "list", "ruleset"]
            ruleset, _, _ = await runProcess(reactor, nft)
    assert code == 0, (out, err)
    assert b"unexpected OACK" not in err
    assert (tmp_path / "got").read_bytes() == data
    assert b"counter packets 3 " in ruleset, ruleset  # two ACK 0s dropped, one passed
    assert 9 < elapsed < 15, f"{elapsed:.1f} s"


@pytest_twisted.ensureDeferred
async def test_atftpWindowedThroughTenPercentLoss(reactor: Any, tmp_path: Path) -> None:
    """
    #19 §4: ten atftp downloads (windowsize 8) at once through 10% loss: none aborts. (Each
    still would if three ACK 0s in a row were lost: 0.1%, see OACK_QUIET.)
    """
    atftp = requirePeer("atftp")
    root, data = lossnet.servedFile(tmp_path, "f", 200_000)
    window = _ATFTP_WINDOW
    async with lossnet.namespace(reactor, lossnet.RANDOM_LOSS.format(every=10)) as inNs:
        async with lossnet.server(reactor, inNs, root, "--max-transfers-per-client", "32"):
            runs = {
                f"get {n}": (
                    [*inNs, atftp, *window, "-g", "-r", "f", "-l", f"got{n}", "127.0.0.1", "6969"],
                    90.0,
                )
                for n in range(10)
            }
            await _allOk(reactor, runs, tmp_path)
    for n in range(10):
        assert (tmp_path / f"got{n}").read_bytes() == data, n
