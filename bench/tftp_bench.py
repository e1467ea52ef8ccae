"""
TFTP benchmark on 127.0.0.1: servers against servers with the same client,
and clients against clients with the same server, in one run.

Every (scenario, server, client) cell is timed in interleaved rounds (each
round visits every cell once, so machine noise hits all alike); the table
shows median MB/s and the ratio to the reference cell (tftpd-hpa's in.tftpd
for servers; curl for clients).

Server peers: in.tftpd (tftpd-hpa) and atftpd (both unpacked into .peers/ by
.ci/install-peers), and, from PyPI, tftpy, py3tftp and tftp (pytftp)
installed into their own venv (``--peers-venv``, made on first use).
Client peers: curl, tftp-hpa's ``tftp``, atftp.

"python floor" is bench/python_floor_tftpd.py: the leanest Python download server we
know how to write (one epoll loop, mmap + sendmsg, nothing else), to tell what any
Python server costs on this machine from what ours costs. "twisted floor"
(bench/twisted_floor_tftpd.py) is the same server on Twisted's reactor: the difference
between the two floors is what the reactor costs, the rest is ours. The python floor also
sends windows (RFC 7440) in GSO batches, and with bench/python_floor_tftp.py, the leanest
windowed client we know how to write in Python (GRO reads, one write a read, an fsync at
the end), it is the floor pair: what any Python client and server can do together.

    .venv/bin/python bench/tftp_bench.py [--rounds 5] [--only servers|clients|concurrent]

``--only concurrent`` runs just the servers' "curl blksize 1428, 8 at once" scenario, the
one where ``--workers auto`` (the production setting, one process per CPU; shown only
there) matters. ``--only pairs`` runs each client with its own server (ours, atftp +
atftpd, pytftp's, the floor pair) at windowsize 16.

In the pairs, each line also shows the transfer on the wire: from the client's request
to its last ACK, read from a packet capture of loopback (tcpdump, where installed). The
whole command's time includes starting the client (for a Python client, the interpreter
and its imports); the wire time is the same work for every pair without it.

Servers and clients run in two CPU cgroups of equal weight (L{CpuShares}), as a systemd
service and a user's session would: the clients on loopback stand in for other machines.

Every line also shows the server's CPU (user + system, its reaped children and live
workers included) per MiB sent, and the slowest and fastest round, since the machine
may be shared: other work slows some rounds, so compare medians over several rounds.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(sys.executable).parent


def freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitUdp(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Wait until something answers an RRQ on the port (an ERROR for a missing file)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early: {proc.args}")
            s.sendto(b"\x00\x01no-such-file-probe\x00octet\x00", ("127.0.0.1", port))
            try:
                s.recvfrom(65536)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"server on {port} did not answer: {proc.args}")


@dataclass
class Server:
    name: str
    command: Callable[[int, Path], list[str]]
    available: Callable[[], bool]
    windowsize: bool = True  # grants windowsize (RFC 7440): in the windowed scenarios
    concurrentOnly: bool = False  # only in the "n at once" scenario


def peersVenv(path: Path) -> Path:
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "pip"), "install", "-q", "tftpy", "py3tftp", "tftp[cli]"],
            check=True,
        )
    return path


def ours(p: int, root: Path, *options: str) -> list[str]:
    return [
        str(BIN / "twistd"),
        "-n",
        "--pidfile=",
        "--logfile=/dev/null",
        "udpsuite",
        "tftp",
        "--port",
        str(p),
        "--interface",
        "127.0.0.1",
        "--root",
        str(root),
        *options,
    ]


def servers(peers: Path) -> list[Server]:
    atftpd = REPO / ".peers/atftpd/usr/sbin/atftpd"
    inTftpd = REPO / ".peers/tftpd-hpa/usr/sbin/in.tftpd"  # never /usr/sbin's: maybe atftpd's
    tftpy = textwrap.dedent(
        """
        import logging, sys, tftpy
        logging.disable(logging.CRITICAL)
        tftpy.TftpServer(sys.argv[2]).listen("127.0.0.1", int(sys.argv[1]))
        """
    )
    return [
        Server(
            "in.tftpd",
            lambda p, root: [str(inTftpd), "-L", "-a", f"127.0.0.1:{p}", "-s", str(root)],
            lambda: inTftpd.exists(),
            windowsize=False,
        ),
        Server("twisted_udpsuite", ours, lambda: (BIN / "twistd").exists()),
        Server(
            "python floor",
            lambda p, root: [PY, str(REPO / "bench/python_floor_tftpd.py"), str(p), str(root)],
            lambda: True,
        ),
        Server(
            "twisted floor",
            lambda p, root: [PY, str(REPO / "bench/twisted_floor_tftpd.py"), str(p), str(root)],
            lambda: True,
            windowsize=False,
        ),
        Server(
            "twisted_udpsuite --workers auto",
            lambda p, root: ours(p, root, "--workers", "auto"),
            lambda: (BIN / "twistd").exists(),
            concurrentOnly=True,
        ),
        Server(
            "atftpd",
            lambda p, root: [
                str(atftpd),
                "--daemon",
                "--no-fork",
                "--logfile",
                "/dev/null",
                "--user",
                "root.root",
                "--port",
                str(p),
                "--bind-address",
                "127.0.0.1",
                str(root),
            ],
            atftpd.exists,
        ),
        Server(
            "tftp (pytftp)",
            lambda p, root: [
                str(peers / "bin/pytftp"),
                "-q",
                "serve",
                "--listen",
                "127.0.0.1",
                "--port",
                str(p),
                str(root),
            ],
            lambda: (peers / "bin/pytftp").exists(),
        ),
        Server(
            "tftpy",
            lambda p, root: [str(peers / "bin/python"), "-c", tftpy, str(p), str(root)],
            lambda: (peers / "bin/python").exists(),
            windowsize=False,
        ),
        Server(
            "py3tftp",
            lambda p, root: [str(peers / "bin/py3tftp"), "--host", "127.0.0.1", "-p", str(p)],
            lambda: (peers / "bin/py3tftp").exists(),
        ),
    ]


@dataclass
class Client:
    name: str
    command: Callable[[int, str, Path], list[str]]
    blksize: int
    windowsize: int = 1


def curl(blksize: int) -> Client:
    return Client(
        f"curl blksize {blksize}",
        lambda p, name, out: [
            "curl",
            "-sS",
            "--tftp-blksize",
            str(blksize),
            "-o",
            str(out),
            f"tftp://127.0.0.1:{p}/{name}",
        ],
        blksize,
    )


def atftp(blksize: int, windowsize: int) -> Client:
    return Client(
        f"atftp blksize {blksize} windowsize {windowsize}",
        lambda p, name, out: [
            "atftp",
            "--option",
            f"blksize {blksize}",
            "--option",
            f"windowsize {windowsize}",
            "-g",
            "-r",
            name,
            "-l",
            str(out),
            "127.0.0.1",
            str(p),
        ],
        blksize,
        windowsize,
    )


def tftpHpa() -> Client:
    return Client(
        "tftp-hpa blksize 512",
        lambda p, name, out: [
            "tftp",
            "127.0.0.1",
            str(p),
            "-m",
            "binary",
            "-c",
            "get",
            name,
            str(out),
        ],
        512,
    )


def ourClient(blksize: int, windowsize: int = 1) -> Client:
    options = ["--blksize", str(blksize)] + (
        ["--windowsize", str(windowsize)] if windowsize > 1 else []
    )
    return Client(
        f"udpsuite blksize {blksize}" + (f" windowsize {windowsize}" if windowsize > 1 else ""),
        lambda p, name, out: [
            str(BIN / "udpsuite"),
            "tftp",
            "get",
            f"127.0.0.1:{p}",
            name,
            str(out),
            "--quiet",
            *options,
        ],
        blksize,
        windowsize,
    )


def floorClient(blksize: int, windowsize: int) -> Client:
    return Client(
        f"python floor blksize {blksize} windowsize {windowsize}",
        lambda p, name, out: [
            PY,
            str(REPO / "bench/python_floor_tftp.py"),
            str(p),
            name,
            str(out),
            str(blksize),
            str(windowsize),
        ],
        blksize,
        windowsize,
    )


def pytftpClient(peers: Path, blksize: int, windowsize: int) -> Client:
    return Client(
        f"pytftp blksize {blksize} windowsize {windowsize}",
        lambda p, name, out: [
            str(peers / "bin/pytftp"),
            "-q",
            "get",
            "--port",
            str(p),
            "-b",
            str(blksize),
            "-w",
            str(windowsize),
            "127.0.0.1",
            name,
            str(out),
        ],
        blksize,
        windowsize,
    )


CPUACCT = Path("/sys/fs/cgroup/cpuacct")
CPU = Path("/sys/fs/cgroup/cpu")
_meterNumbers = itertools.count()


class CpuShares:
    """
    Servers and clients in two CPU cgroups of equal weight (cgroup v1 C{cpu}, as root), as
    systemd runs a service and a user's session (system.slice, user.slice). On loopback the
    clients stand in for other machines; left in one group, a one-process server would get
    one share in nine against 8 curl processes, and a server that forks per transfer
    (in.tftpd) eight in sixteen. Where there is no such cgroup, nothing changes.
    """

    def __init__(self) -> None:
        self.groups: list[Path] = []
        self.clients: Path | None = None

    def open(self) -> None:
        self.clients = self._make("clients")

    def _make(self, name: str) -> Path | None:
        group = CPU / f"udpsuite-bench-{os.getpid()}-{name}"
        try:
            group.mkdir()
        except OSError:
            return None
        self.groups.append(group)
        return group

    def server(self, pid: int, name: str) -> None:
        """Put server C{pid} (and what it forks from now on) in a group of its own."""
        group = self._make(f"server-{next(_meterNumbers)}")
        if group is not None:
            (group / "cgroup.procs").write_text(str(pid))

    def joinClients(self) -> None:
        """In a client's child process before exec: join the clients' group."""
        if self.clients is not None:
            (self.clients / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        for group in self.groups:
            removeCgroup(group)


SHARES = CpuShares()


class ServerCpu:
    """
    CPU seconds (user + system) a server has used, with every process it forks: in.tftpd
    forks one per transfer and lets the kernel reap it (no getrusage of the parent ever
    counts it), our --workers run as children. Measured with a cgroup of its own
    (cgroup v1 cpuacct, as root) when there is one; else from /proc (the process with its
    reaped children and its live descendants: short-lived, self-reaped children missed).
    """

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.group: Path | None = None
        group = CPUACCT / f"udpsuite-bench-{os.getpid()}-{next(_meterNumbers)}"
        try:
            group.mkdir()
            (group / "cgroup.procs").write_text(str(pid))
            self.group = group
        except OSError:
            if group.exists():
                group.rmdir()

    def seconds(self) -> float:
        if self.group is not None:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        return _procCpu(self.pid)

    def close(self) -> None:
        """Remove the cgroup (once its processes have ended)."""
        if self.group is not None:
            removeCgroup(self.group)


def removeCgroup(group: Path) -> None:
    """Remove a cgroup, waiting (up to 5 s) for its last processes to end."""
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def _procCpu(pid: int) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    if pid not in times:
        return 0.0
    total = sum(times[pid])
    family = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                total += times[child][0]
                grew = True
    return total / tick


class WireClock:
    """
    Times a download on the wire: a capture of loopback (tcpdump, filtered in the kernel to
    TFTP requests to the server's port and to ACKs, so it costs little) from which the
    first request to the port and the last ACK from the client's port are read.
    """

    _FILTER = "udp and ((dst port {port} and udp[8:2] = 1) or udp[8:2] = 4)"

    def __init__(self, port: int, work: Path) -> None:
        self.port = port
        self.path = work / "wire.pcap"
        self.proc = subprocess.Popen(
            [
                "tcpdump",
                "-i",
                "lo",
                "-n",
                "-s",
                "64",
                "-B",
                "16384",
                "-w",
                str(self.path),
                self._FILTER.format(port=port),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        self.proc.stderr.readline()  # "listening on lo, ...": the capture has started

    @staticmethod
    def available() -> bool:
        return shutil.which("tcpdump") is not None and os.geteuid() == 0

    def seconds(self) -> float:
        """Stop the capture; the seconds from the request to the client's last ACK."""
        # The kernel hands tcpdump its packets a block at a time, or after a second; a
        # terminated tcpdump writes only what it was handed.
        time.sleep(1.2)
        self.proc.terminate()
        self.proc.wait(timeout=10)
        request: tuple[float, int] | None = None
        lastAck = 0.0
        for stamp, source, destination, opcode in _udpPackets(self.path.read_bytes()):
            if opcode == 1 and destination == self.port and request is None:
                request = (stamp, source)
            elif opcode == 4 and request is not None and source == request[1]:
                lastAck = stamp
        if request is None or not lastAck:
            raise RuntimeError("the capture holds no request or no ACK")
        return lastAck - request[0]


def _udpPackets(pcap: bytes) -> list[tuple[float, int, int, int]]:
    """(time, source port, destination port, TFTP opcode) of each IPv4 UDP packet in a
    capture of loopback (Ethernet framing)."""
    packets = []
    offset = 24  # the file header
    while offset + 16 <= len(pcap):
        seconds, micros, captured, _ = struct.unpack_from("<IIII", pcap, offset)
        frame = pcap[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
            continue
        udp = 14 + (frame[14] & 0x0F) * 4
        if len(frame) >= udp + 10:
            source, destination = struct.unpack_from("!HH", frame, udp)
            opcode = struct.unpack_from("!H", frame, udp + 8)[0]
            packets.append((seconds + micros / 1e6, source, destination, opcode))
    return packets


def timeDownload(
    client: Client,
    port: int,
    name: str,
    size: int,
    work: Path,
    durable: bool = False,
    wire: list[float] | None = None,
) -> float:
    """
    MB/s of one download, checked for size. C{durable}: the time includes an fsync of the
    file once the client is done, so that a client that does not fsync (atftp, pytftp)
    does the same work as ours, which fsyncs before it renames the file into place.
    """
    out = work / "download.bin"
    out.unlink(missing_ok=True)
    clock = WireClock(port, work) if wire is not None else None
    start = time.perf_counter()
    result = subprocess.run(
        client.command(port, name, out),
        capture_output=True,
        timeout=30,
        cwd=work,
        preexec_fn=SHARES.joinClients,
    )
    if durable and out.exists():
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    onWire = clock.seconds() if clock is not None else 0.0
    if result.returncode != 0 or not out.exists() or out.stat().st_size != size:
        raise RuntimeError(f"{client.name} failed: {result.stderr.decode(errors='replace')}")
    if wire is not None:
        wire.append(size / onWire / 1e6)
    return size / elapsed / 1e6


def concurrent(client: Client, port: int, name: str, size: int, work: Path, n: int) -> float:
    """Aggregate MB/s of n simultaneous downloads."""
    outs = [work / f"c{i}.bin" for i in range(n)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            client.command(port, name, o),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=work,
            preexec_fn=SHARES.joinClients,
        )
        for o in outs
    ]
    for proc in procs:
        proc.wait(timeout=120)
    elapsed = time.perf_counter() - start
    for proc, out in zip(procs, outs, strict=True):
        if proc.returncode != 0 or out.stat().st_size != size:
            raise RuntimeError(f"concurrent {client.name} failed")
        out.unlink()
    return n * size / elapsed / 1e6


@dataclass
class Cell:
    """One timed combination; ratios are taken to the group's reference cell."""

    group: str
    label: str
    server: Server
    client: Client
    name: str
    size: int
    concurrency: int = 1
    reference: bool = False
    durable: bool = False  # the download's time includes an fsync of the file
    wire: bool = False  # also time the transfer on the wire (WireClock), in another download


def runMatrix(title: str, cells: list[Cell], rounds: int, root: Path, work: Path) -> None:
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    meters: dict[str, ServerCpu] = {}
    try:
        for cell in cells:
            if cell.server.name not in procs:
                port = freePort()
                proc = subprocess.Popen(
                    cell.server.command(port, root),
                    cwd=root,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs[cell.server.name] = (proc, port)
                meters[cell.server.name] = ServerCpu(proc.pid, cell.server.name)
                SHARES.server(proc.pid, cell.server.name)
                try:
                    waitUdp(port, proc)
                except RuntimeError as e:
                    print(f"  left out: {e}", file=sys.stderr)
        running = {name for name, (proc, _) in procs.items() if proc.poll() is None}
        cells = [c for c in cells if c.server.name in running]
        results: dict[int, list[float]] = {i: [] for i in range(len(cells))}
        cpu: dict[int, list[float]] = {i: [] for i in range(len(cells))}
        wire: dict[int, list[float]] = {i: [] for i in range(len(cells))}
        for _ in range(rounds):
            for i, cell in enumerate(cells):
                port = procs[cell.server.name][1]
                meter = meters[cell.server.name]
                before = meter.seconds()
                try:
                    if cell.concurrency > 1:
                        rate = concurrent(
                            cell.client, port, cell.name, cell.size, work, cell.concurrency
                        )
                    else:
                        rate = timeDownload(
                            cell.client, port, cell.name, cell.size, work, cell.durable
                        )
                except Exception as e:  # a failing peer must not end the run
                    print(f"  {cell.group} / {cell.label}: {e}", file=sys.stderr)
                    continue
                time.sleep(0.05)  # a forked child (in.tftpd) finishes its last packets
                mib = cell.concurrency * cell.size / (1 << 20)
                cpu[i].append((meter.seconds() - before) * 1000 / mib)
                results[i].append(rate)
                if cell.wire:  # a download of its own: the capture stays out of the above
                    try:
                        timeDownload(cell.client, port, cell.name, cell.size, work, wire=wire[i])
                    except Exception as e:
                        print(f"  {cell.group} / {cell.label} (wire): {e}", file=sys.stderr)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for meter in meters.values():
            meter.close()
    print(
        f"\n{title} ({rounds} interleaved rounds, medians; ratios to the group's reference"
        " line; range = slowest..fastest round; server CPU = user + system ms per MiB sent)"
    )
    for group in dict.fromkeys(cell.group for cell in cells):
        print(f"  {group}:")
        members = [(i, c) for i, c in enumerate(cells) if c.group == group]
        base = next(
            (statistics.median(results[i]) for i, c in members if c.reference and results[i]), 0.0
        )
        baseCpu = next(
            (statistics.median(cpu[i]) for i, c in members if c.reference and cpu[i]), 0.0
        )
        baseWire = next(
            (statistics.median(wire[i]) for i, c in members if c.reference and wire[i]), 0.0
        )
        for i, cell in members:
            if not results[i]:
                print(f"    {cell.label:<44} failed")
                continue
            median = statistics.median(results[i])
            ratio = f"{median / base:5.2f}x" if base else "    -"
            spread = f"{min(results[i]):7.1f}..{max(results[i]):<7.1f}"
            perMib = statistics.median(cpu[i])
            cpuRatio = f"{perMib / baseCpu:5.2f}x" if baseCpu else "    -"
            onWire = ""
            if wire[i]:
                wireMedian = statistics.median(wire[i])
                wireRatio = f"{wireMedian / baseWire:5.2f}x" if baseWire else "    -"
                onWire = f"  on the wire {wireMedian:7.1f} MB/s {wireRatio}"
            print(
                f"    {cell.label:<44} {median:9.1f} MB/s {ratio}  ({spread})"
                f"  server CPU {perMib:6.2f} ms/MiB {cpuRatio}{onWire}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["servers", "clients", "concurrent", "pairs"])
    parser.add_argument(
        "--peers-venv", type=Path, default=Path(tempfile.gettempdir()) / "udpsuite-bench-peers"
    )
    parser.add_argument("--small-mib", type=int, default=8, help="file for 512-byte blocks")
    parser.add_argument("--large-mib", type=int, default=128, help="file for large blocks")
    parser.add_argument("--pair-mib", type=int, default=64, help="file for client+server pairs")
    args = parser.parse_args()

    peers = peersVenv(args.peers_venv)
    SHARES.open()
    try:
        run(args, peers)
    finally:
        SHARES.close()


def run(args: argparse.Namespace, peers: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        work = Path(tmp) / "work"
        root.mkdir()
        work.mkdir()
        files = {
            "small.bin": args.small_mib << 20,
            "large.bin": args.large_mib << 20,
            "pair.bin": args.pair_mib << 20,
        }
        for name, size in files.items():
            (root / name).write_bytes(os.urandom(size))
        available = [s for s in servers(peers) if s.available()]
        missing = [s.name for s in servers(peers) if not s.available()]
        if missing:
            print(f"not available, left out: {', '.join(missing)}")

        if args.only in (None, "servers", "concurrent"):
            cells = []
            scenarios = [
                (curl(512), "small.bin", 1),
                (curl(65464), "large.bin", 1),
                (atftp(1428, 16), "large.bin", 1),
                (curl(1428), "small.bin", 8),
            ]
            if args.only == "concurrent":
                scenarios = [s for s in scenarios if s[2] > 1]
            for client, name, n in scenarios:
                group = f"{client.name}" + (f", {n} at once" if n > 1 else "")
                group += f", {files[name] >> 20} MiB"
                # With windows, the servers that grant them, against atftpd (in.tftpd has none).
                windowed = client.windowsize > 1
                reference = "atftpd" if windowed else "in.tftpd"
                if windowed:
                    group += f" (servers with windows; ratios to {reference})"
                for server in available:
                    if (server.concurrentOnly and n == 1) or (windowed and not server.windowsize):
                        continue
                    cells.append(
                        Cell(
                            group,
                            server.name,
                            server,
                            client,
                            name,
                            files[name],
                            n,
                            reference=server.name == reference,
                        )
                    )
            runMatrix("Servers, same client", cells, args.rounds, root, work)

        if args.only in (None, "clients"):
            byName = {s.name: s for s in available}
            hpa, ours = byName["in.tftpd"], byName["twisted_udpsuite"]
            cells = []
            for blksize, name in [(512, "small.bin"), (1428, "large.bin")]:
                group = f"against in.tftpd, blksize {blksize}, {files[name] >> 20} MiB"
                clients = [curl(blksize), ourClient(blksize)]
                if blksize == 512:
                    clients.append(tftpHpa())
                for client in clients:
                    cells.append(
                        Cell(
                            group,
                            client.name,
                            hpa,
                            client,
                            name,
                            files[name],
                            reference=client.name.startswith("curl"),
                        )
                    )
            group = f"best pairs with windowsize 16, blksize 1428, {files['large.bin'] >> 20} MiB"
            peer = byName.get("atftpd", hpa)
            cells.append(
                Cell(
                    group,
                    f"atftp -> {peer.name}",
                    peer,
                    atftp(1428, 16),
                    "large.bin",
                    files["large.bin"],
                    reference=True,
                )
            )
            cells.append(
                Cell(
                    group,
                    "udpsuite -> twisted_udpsuite",
                    ours,
                    ourClient(1428, 16),
                    "large.bin",
                    files["large.bin"],
                )
            )
            runMatrix("Clients, same server", cells, args.rounds, root, work)

        if args.only in (None, "pairs"):
            byName = {s.name: s for s in available}
            cells = []
            size = files["pair.bin"]
            for blksize in (1428, 8192):
                group = (
                    f"client + its server, blksize {blksize} windowsize 16, {size >> 20} MiB,"
                    " each download fsync'd (ours does it itself): the same work"
                )
                pairs = [
                    ("atftp -> atftpd", "atftpd", atftp(blksize, 16)),
                    ("udpsuite -> twisted_udpsuite", "twisted_udpsuite", ourClient(blksize, 16)),
                    ("pytftp -> tftp (pytftp)", "tftp (pytftp)", pytftpClient(peers, blksize, 16)),
                    ("python floor -> python floor", "python floor", floorClient(blksize, 16)),
                ]
                for label, serverName, client in pairs:
                    if serverName in byName:
                        cells.append(
                            Cell(
                                group,
                                label,
                                byName[serverName],
                                client,
                                "pair.bin",
                                size,
                                reference=serverName == "atftpd",
                                durable=True,
                                wire=WireClock.available(),
                            )
                        )
            runMatrix("Pairs: each client with its own server", cells, args.rounds, root, work)


if __name__ == "__main__":
    main()
