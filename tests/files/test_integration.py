"""
The file server and client on real sockets on 127.0.0.1, curl against --http-port,
and the twistd plugin / udpsuite script as processes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, gatherResults
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from twisted_udpsuite.files import client
from twisted_udpsuite.files.service import FileService

pytestmark = pytest.mark.integration

BIG = 200 * 1024 * 1024


def writeBlocks(path: Any, size: int, seed: bytes = b"") -> str:
    """A file of distinct 1 MiB blocks (misordered blocks would show); its sha256."""
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        index = 0
        while written < size:
            chunk = (seed + index.to_bytes(8, "big") + block)[: min(1 << 20, size - written)]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            index += 1
    return digest.hexdigest()


def fileSha(path: Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def bigFile(tmp_path_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("bigroot")
    yield root, writeBlocks(root / "big.bin", BIG)
    os.unlink(root / "big.bin")


@pytest_twisted.async_yield_fixture()
async def service(reactor: Any, tmp_path: Any) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    svc = FileService(FilePath(str(root)), port=0, interface="127.0.0.1", httpPort=0,
                      reactor=reactor)  # fmt: skip
    svc.startService()
    yield svc
    await svc.stopService()


def addressOf(svc: FileService) -> tuple[str, int]:
    assert svc.listening is not None
    return ("127.0.0.1", svc.listening.getHost().port)


@pytest_twisted.async_yield_fixture()
async def bigService(reactor: Any, bigFile: tuple[Any, str]) -> Any:
    svc = FileService(FilePath(str(bigFile[0])), port=0, interface="127.0.0.1", reactor=reactor)
    svc.startService()
    yield svc
    await svc.stopService()


@pytest_twisted.ensureDeferred
async def test_largeDownload(
    reactor: Any, bigService: FileService, bigFile: tuple[Any, str], tmp_path: Any
) -> None:
    """200 MiB arrive byte-identical (sha256 compared) on loopback."""
    local = FilePath(str(tmp_path / "big.bin"))
    started = time.monotonic()
    result = await client.fetch(reactor, addressOf(bigService), "big.bin", local).addTimeout(
        60, reactor
    )
    elapsed = time.monotonic() - started
    assert result.size == BIG and result.sha256 == bigFile[1]
    assert fileSha(local.path) == bigFile[1]
    print(f"200 MiB in {elapsed:.2f}s ({BIG / elapsed / 2**20:.0f} MiB/s)")


async def _fetchUntil(reactor: Any, address: Any, remote: str, local: FilePath, stop: int) -> int:
    """Start a fetch and cancel it once C{stop} bytes are held; return the bytes held."""
    held = [0]
    d: Any = None

    def progress(done: int, total: int | None) -> None:
        held[0] = done
        if done >= stop and d is not None and not d.called:
            reactor.callLater(0, d.cancel)

    d = client.fetch(reactor, address, remote, local, progress=progress)
    with pytest.raises(CancelledError):
        await d.addTimeout(30, reactor)
    return held[0]


@pytest_twisted.ensureDeferred
async def test_killedHalfwayThenResumed(
    reactor: Any, bigService: FileService, bigFile: tuple[Any, str], tmp_path: Any
) -> None:
    """A download cancelled halfway resumes from its part and ends byte-identical."""
    local = FilePath(str(tmp_path / "big.bin"))
    address = addressOf(bigService)
    await _fetchUntil(reactor, address, "big.bin", local, BIG // 2)
    part = os.path.getsize(local.path + ".part")
    assert BIG // 4 < part < BIG and not local.exists()
    result = await client.fetch(reactor, address, "big.bin", local).addTimeout(60, reactor)
    assert result.resumedFrom == part and result.received == BIG - part
    assert fileSha(local.path) == bigFile[1] == result.sha256
    assert not os.path.exists(local.path + ".part")


@pytest_twisted.ensureDeferred
async def test_replacedBetweenHalves(reactor: Any, service: FileService, tmp_path: Any) -> None:
    """The file replaced between the halves: the second fetch restarts, no splice."""
    root = service.root.path
    writeBlocks(os.path.join(root, "f.bin"), 40 << 20, b"old")
    local = FilePath(str(tmp_path / "f.bin"))
    await _fetchUntil(reactor, addressOf(service), "f.bin", local, 20 << 20)
    assert os.path.getsize(local.path + ".part") > 0
    newSha = writeBlocks(os.path.join(root, "f.new"), 40 << 20, b"new")
    os.replace(os.path.join(root, "f.new"), os.path.join(root, "f.bin"))
    result = await client.fetch(reactor, addressOf(service), "f.bin", local).addTimeout(60, reactor)
    assert result.resumedFrom == 0 and fileSha(local.path) == newSha


@pytest_twisted.ensureDeferred
async def test_concurrentDownloads(reactor: Any, service: FileService, tmp_path: Any) -> None:
    """Eight downloads at once, each complete and correct."""
    root = service.root.path
    shas = [writeBlocks(os.path.join(root, f"f{i}"), (4 << 20) + i) for i in range(8)]
    results = await gatherResults(
        [
            client.fetch(reactor, addressOf(service), f"f{i}", FilePath(str(tmp_path / f"o{i}")))
            for i in range(8)
        ]
    ).addTimeout(60, reactor)
    assert [r.sha256 for r in results] == shas
    assert [fileSha(tmp_path / f"o{i}") for i in range(8)] == shas


@pytest_twisted.ensureDeferred
async def test_listAndStatOverTCP(reactor: Any, service: FileService) -> None:
    """ls and stat on a real connection."""
    root = service.root.path
    os.mkdir(os.path.join(root, "dir"))
    with open(os.path.join(root, "dir", "a"), "wb") as f:
        f.write(b"abc")
    entries = await client.listDirectory(reactor, addressOf(service), "dir").addTimeout(10, reactor)
    assert [(e.name, e.size) for e in entries] == [("a", 3)]
    info = await client.stat(reactor, addressOf(service), "dir/a").addTimeout(10, reactor)
    assert info.size == 3


@pytest_twisted.ensureDeferred
async def test_listDirectoryWithoutReactor(reactor: Any, service: FileService) -> None:
    """listDirectory(None, ...) uses the global reactor (it used to fail on None)."""
    os.mkdir(os.path.join(service.root.path, "dir"))
    entries = await client.listDirectory(None, addressOf(service), "").addTimeout(10, reactor)
    assert [(e.name, e.kind) for e in entries] == [("dir", "dir")]


@pytest_twisted.ensureDeferred
async def test_statWithoutReactor(reactor: Any, service: FileService) -> None:
    """stat(None, ...) uses the global reactor (it used to fail on None)."""
    with open(os.path.join(service.root.path, "a"), "wb") as f:
        f.write(b"abc")
    info = await client.stat(None, addressOf(service), "a").addTimeout(10, reactor)
    assert info.kind == "file" and info.size == 3


@pytest_twisted.ensureDeferred
async def test_listByHostName(reactor: Any, service: FileService) -> None:
    """The client resolves a host name (localhost) and connects to what it names."""
    os.mkdir(os.path.join(service.root.path, "dir"))
    port = addressOf(service)[1]
    entries = await client.listDirectory(reactor, ("localhost", port)).addTimeout(10, reactor)
    assert [e.name for e in entries] == ["dir"]


@pytest_twisted.ensureDeferred
async def test_curlHttpPort(reactor: Any, service: FileService, tmp_path: Any) -> None:
    """curl fetches the same files over --http-port: whole, a Range, a listing; no escape."""
    curl = requirePeer("curl")
    root = service.root.path
    digest = writeBlocks(os.path.join(root, "c.bin"), 3 << 20)
    outside = tmp_path / "secret"
    outside.write_bytes(b"secret")
    os.symlink(outside, os.path.join(root, "escape"))
    assert service.httpListening is not None
    base = f"http://127.0.0.1:{service.httpListening.getHost().port}"
    out = tmp_path / "c.out"
    _, err, code = await runProcess(reactor, [curl, "-sSf", "-o", str(out), f"{base}/c.bin"])
    assert code == 0, err
    assert fileSha(out) == digest
    body, err, code = await runProcess(reactor, [curl, "-sSf", "-r", "100-199", f"{base}/c.bin"])
    with open(os.path.join(root, "c.bin"), "rb") as f:
        f.seek(100)
        assert body == f.read(100)
    listing, _, code = await runProcess(reactor, [curl, "-sSf", f"{base}/"])
    assert code == 0 and b"c.bin" in listing
    _, _, code = await runProcess(reactor, [curl, "-sSf", f"{base}/escape"])
    assert code == 22  # HTTP 404


@pytest_twisted.ensureDeferred
async def test_cliFetchAndLs(reactor: Any, service: FileService, tmp_path: Any) -> None:
    """The udpsuite script downloads (no progress when not a terminal) and lists."""
    root = service.root.path
    digest = writeBlocks(os.path.join(root, "cli.bin"), 1 << 20)
    target = f"127.0.0.1:{addressOf(service)[1]}"
    local = tmp_path / "got.bin"
    out, err, code = await runProcess(
        reactor, [sys.executable, "-m", "twisted_udpsuite", "fetch", target, "cli.bin", str(local)]
    )
    assert (code, out, err) == (0, b"", b"")
    assert fileSha(local) == digest
    out, err, code = await runProcess(
        reactor, [sys.executable, "-m", "twisted_udpsuite", "fetch", target, "cli.bin", str(local)]
    )
    assert code == 1 and b"already exists" in err and err.count(b"\n") == 1
    out, err, code = await runProcess(
        reactor, [sys.executable, "-m", "twisted_udpsuite", "fetch", target, "nope", "-q"],
        path=str(tmp_path),
    )  # fmt: skip
    assert code == 1 and b"404" in err and err.count(b"\n") == 1
    out, err, code = await runProcess(
        reactor, [sys.executable, "-m", "twisted_udpsuite", "ls", target]
    )
    assert code == 0 and b"cli.bin" in out


@pytest_twisted.ensureDeferred
async def test_twistdMissingRoot(reactor: Any, tmp_path: Any) -> None:
    """twistd udpsuite files with a missing --root: one line, non-zero status."""
    out, err, code = await runProcess(
        reactor,
        [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "files", "--root",
         str(tmp_path / "missing"), "--port", "0"],
        path=str(tmp_path),
    )  # fmt: skip
    assert code != 0 and b"--root" in err and b"Traceback" not in out + err


@pytest_twisted.ensureDeferred
async def test_twistdServesFiles(reactor: Any, tmp_path: Any) -> None:
    """twistd -n udpsuite files serves a root; udpsuite fetch gets a file; logs per request."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "t.txt").write_bytes(b"from twistd\n")
    server = BackgroundProcess(
        reactor,
        [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "files", "--root", str(root),
         "--port", "0", "--interface", "127.0.0.1"],
        path=str(tmp_path),
    )  # fmt: skip
    try:
        match = await server.waitFor(rb"files listening on 127\.0\.0\.1:(\d+)")
        port = int(match.group(1))
        local = tmp_path / "t.txt"
        out, err, code = await runProcess(
            reactor,
            [sys.executable, "-m", "twisted_udpsuite", "fetch", f"127.0.0.1:{port}", "t.txt",
             str(local)],
        )  # fmt: skip
        assert code == 0, err
        assert local.read_bytes() == b"from twistd\n"
        await server.waitFor(rb"FETCH 't.txt' from 127\.0\.0\.1:\d+: ok, 12 bytes")
    finally:
        await server.stop()
