"""C{twistd udpsuite files} options and service, on a MemoryReactor."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.web.server import Site

from twisted_udpsuite import ports, tap
from twisted_udpsuite.activation import InheritedSocket, assign
from twisted_udpsuite.files import service
from twisted_udpsuite.files.plain import PlainFileFactory
from twisted_udpsuite.files.server import FileServerFactory
from twisted_udpsuite.files.service import FileService


def parse(argv: list[str]) -> service.Options:
    options = service.Options()
    options.parseOptions(argv)
    return options


def test_defaults(tmp_path: Any, monkeypatch: Any) -> None:
    """Port 8000, all IPv4 interfaces, the current directory, no HTTP."""
    monkeypatch.chdir(tmp_path)
    options = parse([])
    assert options["port"] == ports.FILES and options["interface"] == ""
    assert options["root"].path == str(tmp_path) and options["http-port"] is None


def test_missingRoot(tmp_path: Any) -> None:
    """A --root that is not a directory is a one-line usage error."""
    with pytest.raises(usage.UsageError, match="--root"):
        parse(["--root", str(tmp_path / "missing")])


@pytest.mark.parametrize("argv", [["--http-port", "x"], ["--max-connections", "0"]])
def test_badOptions(argv: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        parse(argv)


def test_listens(tmp_path: Any) -> None:
    """Our port and the HTTP port on the same interface; both closed on stop."""
    reactor = MemoryReactor()
    options = parse(["--root", str(tmp_path), "--port", "9000", "--http-port", "9001",
                     "--interface", "127.0.0.1", "--idle-timeout", "7"])  # fmt: skip
    svc = service.makeService(options, reactor)
    svc.startService()
    (p1, f1, _, i1), (p2, f2, _, i2) = reactor.tcpServers
    assert (p1, i1, p2, i2) == (9000, "127.0.0.1", 9001, "127.0.0.1")
    assert isinstance(f1, FileServerFactory) and f1.idleTimeout == 7
    assert isinstance(f2, Site)
    svc.stopService()


def test_cannotListen(tmp_path: Any) -> None:
    """A port in use raises CannotListenError from startService (tap turns it into a line)."""
    reactor = RaisingMemoryReactor(listenException=CannotListenError("", 8000, OSError("in use")))
    svc = service.makeService(parse(["--root", str(tmp_path)]), reactor)
    with pytest.raises(CannotListenError):
        svc.startService()


def test_registered() -> None:
    """The files service is a twistd udpsuite subcommand."""
    assert service.SPEC in tap.SERVICES


def test_plainPortOption(tmp_path: Any) -> None:
    """--plain-port: off by default, a port number when given."""
    assert parse(["--root", str(tmp_path)])["plain-port"] is None
    assert parse(["--root", str(tmp_path), "--plain-port", "8001"])["plain-port"] == 8001
    with pytest.raises(usage.UsageError, match="--plain-port"):
        parse(["--plain-port", "x"])


def test_listensPlain(tmp_path: Any) -> None:
    """
    --plain-port adds a listener named files-plain (what socket activation matches) on
    the same interface, with the framed port's limits; it drains with the others.
    """
    reactor = MemoryReactor()
    options = parse(["--root", str(tmp_path), "--port", "9000", "--plain-port", "9002",
                     "--interface", "127.0.0.1", "--max-per-host", "3"])  # fmt: skip
    svc = service.makeService(options, reactor)
    assert [listener.name for listener in svc.listeners] == ["files", "files-plain"]
    svc.startService()
    (p1, f1, _, i1), (p2, f2, _, i2) = reactor.tcpServers
    assert (p1, i1, p2, i2) == (9000, "127.0.0.1", 9002, "127.0.0.1")
    assert isinstance(f2, PlainFileFactory) and f2 is svc.plainFactory
    assert f2.limits.maxPerHost == 3 and f2.root == f1.root
    assert svc.plainListening is not None and svc.httpListening is None
    assert svc.plainCounts is f2.counts
    stopped = svc.stopService()
    assert f2.stopping and stopped.called


def test_plainSocketActivation(tmp_path: Any) -> None:
    """A socket passed as FileDescriptorName=files-plain goes to the plain listener."""
    svc = FileService(FilePath(str(tmp_path)), plainPort=ports.FILES_PLAIN, httpPort=8080)
    plainSocket = InheritedSocket(5, "files-plain", socket.AF_INET, "tcp", "0.0.0.0", 1234)
    assign([plainSocket], svc.listeners)
    assert {x.name: x.inherited for x in svc.listeners} == {
        "files": None,
        "files-http": None,
        "files-plain": 5,
    }
