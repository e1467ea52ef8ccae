"""
The HTTP origin and its cache against a real nginx (Debian's nginx-light) on 127.0.0.1
(#18 §3): a cache hit sends no request, an unchanged file is revalidated (304), a changed
one refetched, a missing one is ERROR 1, and the origin going away mid-transfer ends the
transfer with an ERROR and leaves no cache entry behind. nginx's access log is the witness
of what was asked.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.test_interop_client import freeUDPPort
from twisted_udpsuite.paths import isTemporaryName
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.client import get
from twisted_udpsuite.tftp.origin import HTTPOriginBackend, OriginCache
from twisted_udpsuite.tftp.server import ServerPolicy, TFTPServerProtocol

pytestmark = pytest.mark.interop

_CONFIG = """
daemon off;
master_process off;
error_log {tmp}/error.log info;
pid {tmp}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format witness '$request_method $uri $status';
    access_log {tmp}/access.log witness;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location /slow/ {{ limit_rate 200k; }}
    }}
}}
"""


def _freeTCPPort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # type: ignore[no-any-return]


@dataclass
class Nginx:
    process: BackgroundProcess
    www: Path
    log: Path
    url: str

    def requests(self) -> list[str]:
        """nginx's access log: one 'METHOD URI STATUS' line per request so far."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest_twisted.async_yield_fixture()
async def nginx(reactor: Any, tmp_path: Path) -> AsyncIterator[Nginx]:
    """nginx serving tmp_path/nginx/www on a free port of 127.0.0.1, in one process."""
    program = requirePeer("nginx")
    tmp = tmp_path / "nginx"
    (tmp / "www" / "boot").mkdir(parents=True)
    (tmp / "www" / "slow").mkdir()
    port = _freeTCPPort()
    (tmp / "nginx.conf").write_text(_CONFIG.format(tmp=tmp, port=port))
    process = BackgroundProcess(reactor, [program, "-p", str(tmp), "-c", str(tmp / "nginx.conf")])
    try:
        for _ in range(100):  # until it listens (bounded: 5 s)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await deferLater(reactor, 0.05, lambda: None)
        else:
            raise RuntimeError(f"nginx did not start: {process.output!r}")
        yield Nginx(process, tmp / "www", tmp / "access.log", f"http://127.0.0.1:{port}/")
    finally:
        with contextlib.suppress(ProcessExitedAlready):  # a test may have killed it
            process.signal("KILL")
        await process.ended()


async def _udpsuiteGet(reactor: Any, port: int, name: str, local: Path) -> tuple[int, str]:
    out, err, code = await runProcess(
        reactor,
        [venvScript("udpsuite"), "tftp", "get", f"127.0.0.1:{port}", name, str(local), "--quiet"],
    )
    return code, err.decode(errors="replace")


@pytest_twisted.ensureDeferred
async def test_cacheAgainstNginx(reactor: Any, tmp_path: Path, nginx: Nginx) -> None:
    """
    C{twistd udpsuite tftp --origin URL --cache DIR}: the first download asks nginx, the
    second does not; with C{--cache-fresh 0} every download revalidates: 304 for an
    unchanged file (served from the cache), 200 for a changed one; a missing one is ERROR 1.
    """
    image = nginx.www / "boot" / "vmlinuz"
    first = os.urandom(300_000)
    image.write_bytes(first)
    cache = tmp_path / "cache"
    local = tmp_path / "got"

    async def serve(*options: str) -> BackgroundProcess:
        port = freeUDPPort()
        server = BackgroundProcess(
            reactor,
            [venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp", "--port", str(port)]
            + ["--interface", "127.0.0.1", "--origin", nginx.url + "boot/", "--cache", str(cache)]
            + list(options),
        )
        await server.waitFor(b"tftp listening")
        server.port = port  # type: ignore[attr-defined]
        return server

    server = await serve("--cache-fresh", "600")
    try:
        for _ in range(2):
            assert await _udpsuiteGet(reactor, server.port, "vmlinuz", local) == (0, "")
            assert local.read_bytes() == first
        assert nginx.requests() == ["GET /boot/vmlinuz 200"]  # the hit sent no request
        code, err = await _udpsuiteGet(reactor, server.port, "missing", local)
        assert code != 0 and err.endswith("file not found\n")
    finally:
        await server.stop()

    server = await serve("--cache-fresh", "0")
    try:
        assert await _udpsuiteGet(reactor, server.port, "vmlinuz", local) == (0, "")
        assert local.read_bytes() == first
        second = os.urandom(200_000)
        image.write_bytes(second)
        os.utime(image, (os.stat(image).st_mtime + 10,) * 2)  # a new ETag and Last-Modified
        assert await _udpsuiteGet(reactor, server.port, "vmlinuz", local) == (0, "")
        assert local.read_bytes() == second
    finally:
        await server.stop()
    assert nginx.requests()[-2:] == ["GET /boot/vmlinuz 304", "GET /boot/vmlinuz 200"]
    assert not [n for n in os.listdir(cache) if isTemporaryName(n)]


@pytest_twisted.ensureDeferred
async def test_originGoesAwayMidTransfer(reactor: Any, tmp_path: Path, nginx: Nginx) -> None:
    """
    nginx sends a 2 MB file at 200 kB/s and is killed part-way: the TFTP client gets an
    ERROR at once, and the cache holds neither an entry nor a temporary file.
    """
    (nginx.www / "slow" / "initrd").write_bytes(os.urandom(2_000_000))
    cacheDir = FilePath(str(tmp_path / "cache"))
    cache = OriginCache(cacheDir, 10**8, clock=reactor)
    backend = HTTPOriginBackend(nginx.url + "slow/", cache=cache, reactor=reactor, timeout=10)
    protocol = TFTPServerProtocol(backend, ServerPolicy(rate=None), reactor=reactor)
    port = reactor.listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=65536)
    sink = io.BytesIO()
    try:
        download = get(reactor, ("127.0.0.1", port.getHost().port), "initrd", sink, blksize=1428)
        download.addTimeout(20, reactor)
        for _ in range(100):  # until some of it has arrived (bounded: 10 s)
            if sink.tell() > 100_000:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert 100_000 < sink.tell() < 2_000_000
        nginx.process.signal("KILL")
        with pytest.raises(errors.TFTPError) as info:
            await download
        assert info.value.code == 0 and info.value.message.startswith("Origin failed after")
    finally:
        await port.stopListening()
    assert sorted(os.listdir(cacheDir.path)) == []
    assert cache.lookup(nginx.url + "slow/initrd") is None
