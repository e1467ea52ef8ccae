"""
Deployment options for network-boot fleets (#18 §2): transfer ports from a range, a longest
transfer, blksize fitted to the MTU, refused options, per-client roots, case-insensitive
names, the backslash rule and remapped names kept inside the root; in memory with a Clock,
and the options of C{twistd udpsuite tftp}. The MTU and the port range also for real, in
namespaces of the test's own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.filepath import FilePath
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.lossnet import namespace
from tests.tftp.test_server import _file, _World
from twisted_udpsuite.tftp import errors
from twisted_udpsuite.tftp.backend import FilesystemBackend, IBackend, RemappingBackend
from twisted_udpsuite.tftp.mtu import routeMTU
from twisted_udpsuite.tftp.options import (
    ServerOptionLimits,
    blksizeForMTU,
    negotiateServerOptions,
)
from twisted_udpsuite.tftp.remap import RemapRules
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.tap import Options, PortRange
from twisted_udpsuite.tftp.wire import Error, ReadRequest


@pytest.fixture
def root(tmp_path: Any) -> FilePath:
    return FilePath(str(tmp_path))


def _ending(events: list[Any]) -> dict[str, Any]:
    (event,) = [e for e in events if e.get("tftpTransfer")]
    return event


# Transfer ports from a range (tftpd-hpa -R)


def test_transferPortsFromTheRange(root: FilePath) -> None:
    """
    Each transfer gets a port of the range; when all are taken, the next request gets
    ERROR 0 and the running transfers are undisturbed.
    """
    _file(root, "f", 5000)
    world = _World(root, policy=ServerPolicy(rate=None, portRange=(40000, 40001)))
    peers = [world.raw() for _ in range(3)]
    for peer in peers:
        peer.send(ReadRequest(b"f", "octet"))
        world.net.pump()
    tids = sorted(addr[1] for peer in peers[:2] for packet, addr in peer.received)
    assert tids == [40000, 40001]
    (refusal,) = [packet for packet, _ in peers[2].received]
    assert (refusal.code, refusal.message) == (0, "Server cannot open a port")
    world.protocol.stopProtocol()
    world.settle()


def test_portRangeTransfersComplete(root: FilePath) -> None:
    """One port is enough for transfers one after the other."""
    data = _file(root, "f", 3000)
    world = _World(root, policy=ServerPolicy(rate=None, portRange=(50000, 50000)))
    for _ in range(3):
        got, result = world.get("f")
        assert got == data and result.server == ("192.0.2.1", 50000)
    world.settle()


@pytest.mark.parametrize("portRange", [(0, 10), (10, 9), (1, 65536)])
def test_badPortRange(portRange: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="portRange"):
        ServerPolicy(portRange=portRange)


# The longest transfer


def test_maxDurationEndsAStalledTransfer(root: FilePath) -> None:
    """
    A transfer still running after maxDuration seconds is ended with ERROR 0 to the client
    and logged as failed with the reason; no timer is left.
    """
    _file(root, "f", 100_000)
    policy = ServerPolicy(rate=None, maxDuration=5.0, retries=100, unansweredRetries=100)
    world = _World(root, policy=policy)
    peer = world.raw()
    with capturedLogs() as events:
        peer.send(ReadRequest(b"f", "octet"))
        world.net.advance(4.9)
        assert world.protocol.sessions
        world.net.advance(0.2)
        assert world.protocol.sessions == {}
    assert peer.received[-1][0] == Error(0, "Transfer took longer than 5 s")
    event = _ending(events)
    assert (event["outcome"], event["reason"]) == ("failed", "Transfer took longer than 5 s")
    world.settle()


def test_maxDurationWhileTheBackendIsStillOpening(root: FilePath) -> None:
    """A backend that never answers (a dead origin) cannot hold a session past the limit."""
    opening: list[Deferred[Any]] = []

    @implementer(IBackend)
    class Stuck:
        def openRead(self, name: bytes, peer: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            opening.append(d)
            return d

        def openWrite(self, name: bytes, peer: Any, size: Any) -> Deferred[Any]:
            raise AssertionError("no uploads here")

    world = _World(root, policy=ServerPolicy(rate=None, maxDuration=2.0), backend=Stuck())
    peer = world.raw()
    peer.send(ReadRequest(b"f", "octet"))
    world.net.advance(2.5)
    assert peer.received == [(Error(0, "Transfer took longer than 2 s"), peer.received[0][1])]
    assert opening[0].called  # cancelled
    world.settle()


def test_maxDurationLeavesQuickTransfersAlone(root: FilePath) -> None:
    """A transfer that ends in time cancels its deadline (settle checks no timer is left)."""
    data = _file(root, "f", 10_000)
    world = _World(root, policy=ServerPolicy(rate=None, maxDuration=1.0))
    assert world.get("f")[0] == data
    assert world.put(b"x" * 3000, "up").bytes == 3000
    world.settle()


# blksize fitted to the MTU


@pytest.mark.parametrize(("mtu", "version", "blksize"), [(1500, 4, 1468), (1280, 6, 1228)])
def test_blksizeForMTU(mtu: int, version: int, blksize: int) -> None:
    """IP (20 or 40 bytes), UDP (8) and TFTP (4) headers come off the MTU."""
    assert blksizeForMTU(mtu, version) == blksize
    assert blksizeForMTU(65536, 4) == 65464
    assert blksizeForMTU(20, 4) == 8


def test_fitMtuLowersBlksize(root: FilePath) -> None:
    """
    With fitMTU, a client asking for 1468-byte blocks through a 1280-byte MTU gets 1248,
    and a smaller request is granted as it is; the route is looked up from the address
    the request arrived at.
    """
    data = _file(root, "f", 5000)
    world = _World(root, policy=ServerPolicy(rate=None, fitMTU=True))
    asked = []

    def mtuOf(local: str, peer: str) -> int:
        asked.append((local, peer))
        return 1280

    world.protocol.mtuOf = mtuOf
    got, result = world.get("f", blksize=1468)
    assert got == data and result.options.blksize == 1248
    assert world.get("f", blksize=1024)[1].options.blksize == 1024
    assert asked[0] == ("192.0.2.1", "192.0.2.2")
    world.settle()


def test_fitMtuUnknownLeavesTheLimit(root: FilePath) -> None:
    """Where the MTU cannot be learnt, the policy's limit alone decides."""
    _file(root, "f", 5000)
    world = _World(root, policy=ServerPolicy(rate=None, fitMTU=True))
    world.protocol.mtuOf = lambda local, peer: None
    assert world.get("f", blksize=8192)[1].options.blksize == 8192
    world.settle()


def test_routeMTUOnLoopback() -> None:
    """The kernel's answer for a real route (loopback: nothing is sent)."""
    mtu = routeMTU("127.0.0.1", "127.0.0.1")
    assert mtu is not None and mtu >= 1500
    assert routeMTU("::ffff:127.0.0.1", "::ffff:127.0.0.1") == mtu
    assert routeMTU("192.0.2.250", "127.0.0.1") is None  # not an address of ours


# Refused options


def test_refusedOptionsAreLeftOut() -> None:
    """A refused option is never in the OACK, whatever its case; the others are."""
    limits = ServerOptionLimits(refused=frozenset({"windowsize", "tsize"}))
    options, oack = negotiateServerOptions(
        {"BLKSIZE": "1428", "WindowSize": "8", "tsize": "0"},
        isRead=True,
        limits=limits,
        fileSize=10,
    )
    assert oack == {"blksize": "1428"}
    assert (options.windowsize, options.tsize) == (1, None)
    with pytest.raises(ValueError, match="utimeout"):
        ServerOptionLimits(refused=frozenset({"utimeout"}))


def test_refusedWindowsizeEndToEnd(root: FilePath) -> None:
    """A client that asks for a window gets lock-step, and the file arrives."""
    data = _file(root, "f", 20_000)
    limits = ServerOptionLimits(refused=frozenset({"windowsize"}))
    world = _World(root, policy=ServerPolicy(rate=None, limits=limits))
    got, result = world.get("f", blksize=1428, windowsize=8)
    assert got == data
    assert result.accepted == {"blksize": "1428", "tsize": "20000"}
    world.settle()


# Names: per-client roots, case, backslashes, remapped names


def _read(backend: Any, name: str, peer: tuple[str, int] = ("192.0.2.7", 2000)) -> bytes:
    reader = backend.openRead(name.encode(), peer)
    try:
        return reader.read(1 << 20)
    finally:
        reader.close()


def _tree(root: FilePath, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root.preauthChild(name)
        path.parent().makedirs(ignoreExistingDirectory=True)
        path.setContent(data)


def test_clientRootsFallback(root: FilePath) -> None:
    """
    C{ROOT/<client address>/} first, then C{ROOT}: a client's own copy wins, others see the
    common one; uploads go into the client's directory when it has one.
    """
    _tree(root, {"pxelinux.0": b"common", "cfg": b"common cfg", "192.0.2.7/cfg": b"mine"})
    _tree(root, {"2001:db8::7/cfg": b"v6 mine"})
    backend = FilesystemBackend(root, clientRoots="fallback", writable=True)
    assert _read(backend, "cfg") == b"mine"
    assert _read(backend, "pxelinux.0") == b"common"
    assert _read(backend, "cfg", ("192.0.2.8", 2000)) == b"common cfg"
    assert _read(backend, "cfg", ("::ffff:192.0.2.7", 2000)) == b"mine"
    assert _read(backend, "cfg", ("2001:db8::7", 2000)) == b"v6 mine"
    with pytest.raises(errors.FileNotFound):
        backend.openRead(b"missing", ("192.0.2.7", 2000))
    writer = backend.openWrite(b"log", ("192.0.2.7", 2000), None)
    writer.write(b"uploaded")
    writer.finish()
    assert root.preauthChild("192.0.2.7/log").getContent() == b"uploaded"


def test_clientRootsIsolate(root: FilePath) -> None:
    """Isolated: a client sees its own directory only; one without any gets nothing."""
    _tree(root, {"pxelinux.0": b"common", "192.0.2.7/cfg": b"mine"})
    backend = FilesystemBackend(root, clientRoots="isolate")
    assert _read(backend, "cfg") == b"mine"
    with pytest.raises(errors.FileNotFound):
        backend.openRead(b"pxelinux.0", ("192.0.2.7", 2000))
    with pytest.raises(errors.AccessViolation):
        backend.openRead(b"pxelinux.0", ("192.0.2.8", 2000))
    with pytest.raises(errors.AccessViolation):  # no climbing into the common root
        backend.openRead(b"../pxelinux.0", ("192.0.2.7", 2000))
    with pytest.raises(ValueError):
        FilesystemBackend(root, clientRoots="shared")


def test_clientRootsConfinedAgainstSymlinks(root: FilePath, tmp_path: Any) -> None:
    """A client directory that is a symlink out of the root is not served."""
    outside = tmp_path.parent / f"outside-{os.getpid()}"
    outside.mkdir(exist_ok=True)
    (outside / "cfg").write_bytes(b"outside")
    os.symlink(outside, root.child("192.0.2.7").path)
    backend = FilesystemBackend(root, clientRoots="isolate")
    with pytest.raises(errors.AccessViolation):
        backend.openRead(b"cfg", ("192.0.2.7", 2000))


def test_ignoreCase(root: FilePath) -> None:
    """
    A name that does not exist as written matches an existing one that differs only in
    case, directory by directory; an exact match always wins.
    """
    _tree(root, {"PXELinux.cfg/Default": b"default", "Boot/x": b"X", "boot/x": b"x"})
    backend = FilesystemBackend(root, ignoreCase=True)
    assert _read(backend, "pxelinux.cfg/default") == b"default"
    assert _read(backend, "\\PXELINUX.CFG\\DEFAULT") == b"default"
    assert _read(backend, "boot/x") == b"x"
    assert _read(backend, "BOOT/X") == b"X"  # "Boot" sorts before "boot"
    with pytest.raises(errors.FileNotFound):
        _read(FilesystemBackend(root), "pxelinux.cfg/default")
    with pytest.raises(errors.AccessViolation):
        _read(backend, "../" + root.basename() + "/Boot/x")


def test_backslashRule(root: FilePath) -> None:
    """
    The documented rule: a backslash separates like C{/}, leading separators are dropped,
    a drive letter and C{..} are refused.
    """
    _tree(root, {"boot/pxelinux.0": b"nbp"})
    backend = FilesystemBackend(root)
    for name in ("boot/pxelinux.0", "\\boot\\pxelinux.0", "/boot\\pxelinux.0", "//boot/pxelinux.0"):
        assert _read(backend, name) == b"nbp"
    for name in ("C:\\boot\\pxelinux.0", "boot\\..\\boot\\pxelinux.0"):
        with pytest.raises(errors.AccessViolation):
            _read(backend, name)


def test_remappedNamesStayConfined(root: FilePath) -> None:
    """Whatever the rules make of a name, the result is confined to the root."""
    _tree(root, {"x": b"inside"})
    rules = RemapRules.parse("r ^escape$ ../../../../etc/passwd\nr ^abs$ /x\na ^no No\\ way")
    backend = RemappingBackend(FilesystemBackend(root), rules)
    assert verifyObject(IBackend, backend)
    assert _read(backend, "abs") == b"inside"  # a leading / is the root
    with pytest.raises(errors.AccessViolation):
        _read(backend, "escape")
    with pytest.raises(errors.AccessViolation, match="No way"):
        _read(backend, "no")
    assert backend.root == root
    assert backend.cleanStaleUploads() == []


def test_remapFileOnTheServer(root: FilePath) -> None:
    """Through the server: the remapped file arrives; a refusal is ERROR 2 with its text."""
    _tree(root, {"images/pxelinux.0": b"nbp" * 1000})
    rules = RemapRules.parse("r ^pxelinux\\.0$ images/\\0\na \\.pvt$ Private")
    world = _World(root, backend=RemappingBackend(FilesystemBackend(root), rules))
    assert world.get("pxelinux.0")[0] == b"nbp" * 1000
    with pytest.raises(errors.AccessViolation, match="Private"):
        world.get("keys.pvt")
    world.settle()


# twistd udpsuite tftp's options


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_deploymentOptions(tmp_path: Path) -> None:
    """Each option reaches the policy or the backend it describes."""
    rules = tmp_path / "rules"
    rules.write_text("r ^a$ b\n")
    options = _parse(
        "--root", str(tmp_path), "--port-range", "7000:7010", "--map-file", str(rules),
        "--ignore-case", "--client-roots", "fallback", "--max-duration", "30", "--fit-mtu",
        "--refuse-option", "WindowSize", "--refuse-option", "timeout",
    )  # fmt: skip
    policy = options.policy()
    assert (policy.portRange, policy.maxDuration, policy.fitMTU) == ((7000, 7010), 30, True)
    assert policy.limits.refused == {"windowsize", "timeout"}
    backend = options.backend()
    assert isinstance(backend, RemappingBackend)
    assert isinstance(backend.backend, FilesystemBackend)
    assert (backend.backend.ignoreCase, backend.backend.clientRoots) == (True, "fallback")
    assert backend.rules.rewrite("a", isRead=True, client="192.0.2.1") == "b"
    again = _parse(*options.toArgv())  # what worker processes get
    assert dict(again) == dict(options)
    assert again.policy() == policy
    defaults = _parse("--root", str(tmp_path))
    assert isinstance(defaults.backend(), FilesystemBackend)
    assert _parse(*defaults.toArgv()).policy() == defaults.policy()
    assert str(PortRange(1, 2)) == "1:2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port-range", "7000"], "--port-range: '7000' is not LOW:HIGH"),
        (["--port-range", "9:8"], "--port-range: ports from 1 to 65535, the lower first"),
        (["--port-range", "1:70000"], "--port-range: ports from 1 to 65535, the lower first"),
        (["--client-roots", "all"], "--client-roots: one of fallback, isolate"),
        (["--refuse-option", "utimeout"], "--refuse-option: 'utimeout' is not one of"),
        (["--max-duration", "-1"], "--max-duration: must be at least 0"),
        (["--map-file", "/nonexistent/rules"], "--map-file: No such file or directory"),
    ],
)
def test_badDeploymentOptions(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=re.escape(message)):
        _parse(*argv)


def test_badMapFileNamesTheLine(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("# fine\nrq a b\n")
    with pytest.raises(usage.UsageError, match="line 2: invalid operation flag 'q'"):
        _parse("--map-file", str(rules))


# For real: the MTU of the interface, and a port range, in namespaces of the test's own


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_fitMtuThroughARealInterface(reactor: Any, tmp_path: Path) -> None:
    """
    Two namespaces joined by a veth pair with a 1280-byte MTU: a client that asks for
    1468-byte blocks gets 1248 from a server on the wildcard address with --fit-mtu (the
    request's arrival address picks the route), and the file arrives whole.
    """
    ip = requirePeer("ip")
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(20_000)
    (root / "nbp.0").write_bytes(data)
    async with (
        namespace(reactor, tag="pxe-mtu") as serverSide,
        namespace(reactor, tag="pxe-mtu") as clientSide,
    ):
        for prefix, command in (
            (serverSide, f"link add veth-s mtu 1280 type veth peer veth-c netns {clientSide[-1]}"),
            (serverSide, "addr add 10.78.0.1/24 dev veth-s"),
            (clientSide, "addr add 10.78.0.2/24 dev veth-c"),
            (serverSide, "link set veth-s up"),
            (clientSide, "link set veth-c up"),
        ):
            out, err, code = await runProcess(reactor, [*prefix, ip, *command.split()])
            assert code == 0, (command, err)
        server = BackgroundProcess(
            reactor,
            [*serverSide, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
            + ["--port", "6969", "--root", str(root), "--fit-mtu"],
        )
        try:
            await server.waitFor(b"tftp listening")
            local = tmp_path / "got"
            out, err, code = await runProcess(
                reactor,
                [*clientSide, venvScript("udpsuite"), "tftp", "get", "10.78.0.1:6969"]
                + ["nbp.0", str(local), "--blksize", "1468", "--quiet"],
            )
            assert code == 0, err
            assert local.read_bytes() == data
            await server.waitFor(b"RRQ 'nbp.0'.*completed")
        finally:
            await server.stop()
    assert b"'blksize': '1248'" in server.output


@pytest.mark.interop
@pytest_twisted.ensureDeferred
async def test_portRangeForReal(reactor: Any, tmp_path: Path, loopbackNamespace: Any) -> None:
    """twistd udpsuite tftp --port-range: every transfer's port is in the range."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 3000)
    server = BackgroundProcess(
        reactor,
        [*loopbackNamespace, venvScript("twistd"), "-n", "--pidfile=", "udpsuite", "tftp"]
        + ["--port", "6969", "--root", str(root), "--port-range", "41000:41002"],
    )
    try:
        await server.waitFor(b"tftp listening")
        for _ in range(4):
            local = tmp_path / "got"
            out, err, code = await runProcess(
                reactor,
                [*loopbackNamespace, venvScript("udpsuite"), "tftp", "get"]
                + ["127.0.0.1:6969", "f", str(local), "--quiet"],
            )
            assert code == 0, err
    finally:
        await server.stop()
    ports = re.findall(rb"TFTPSession starting on (\d+)", server.output)
    assert len(ports) == 4 and {int(p) for p in ports} <= {41000, 41001, 41002}
