# -*- test-case-name: tests.tftp.test_service -*-
"""
The TFTP service for C{twistd -n udpsuite tftp}: options for every limit, and the listening
port's lifetime (running transfers are told and stopped when the service stops).

With C{--workers N} (N > 1) L{makeService} returns the multi-process service of
L{twisted_udpsuite.tftp.workers} instead; library users keep L{TFTPService}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.activation import inetdSocket
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import (
    Listener,
    ListeningService,
    Offer,
    ServiceOptions,
    ServiceSpec,
    numberOption,
)
from twisted_udpsuite.tftp.backend import (
    CLIENT_ROOTS,
    FilesystemBackend,
    IBackend,
    RemappingBackend,
)
from twisted_udpsuite.tftp.options import (
    MAX_BLKSIZE,
    MAX_WINDOWSIZE,
    MIN_BLKSIZE,
    OPTION_NAMES,
    ServerOptionLimits,
)
from twisted_udpsuite.tftp.origin import HTTPOriginBackend, OriginCache, originBase
from twisted_udpsuite.tftp.remap import RemapError, RemapRules
from twisted_udpsuite.tftp.server import MAX_PACKET, ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.trace import IWireTracer, PcapWriter, TracerGroup, logTracer

__all__ = [
    "INETD_TIMEOUT",
    "MAX_WORKERS",
    "SPEC",
    "InetdTFTPService",
    "Options",
    "TFTPService",
    "makeService",
]

MAX_WORKERS = 64
"""Largest C{--workers}: far above any useful count, low enough to catch a typo."""

_workerCount = numberOption("workers", int, low=1, high=MAX_WORKERS)


def workersOption(value: str) -> int:
    """C{--workers}: a number, or C{auto} (one process per CPU, at most L{MAX_WORKERS})."""
    if value.strip().lower() == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    return int(_workerCount(value))


INETD_TIMEOUT = 900.0
"""C{--inetd-timeout}'s default: idle seconds before exiting, C{in.tftpd --timeout}'s default."""


class PortRange(NamedTuple):
    """C{--port-range LOW:HIGH}, written back the same way (for worker processes)."""

    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}:{self.high}"


def _portRange(value: str) -> PortRange | None:
    """C{--port-range}: C{LOW:HIGH} within 1..65535 (or 0: the kernel chooses)."""
    if value == "0":
        return None
    low, sep, high = value.partition(":")
    if not (sep and low.isdigit() and high.isdigit()):
        raise usage.UsageError(f"--port-range: {value!r} is not LOW:HIGH")
    if not 1 <= int(low) <= int(high) <= 65535:
        raise usage.UsageError("--port-range: ports from 1 to 65535, the lower first")
    return PortRange(int(low), int(high))


DEFAULT_CACHE_SIZE = 1 << 30
"""C{--cache-size}'s default: 1 GiB."""

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byteSize(value: str) -> int:
    """C{--cache-size}: bytes, or with a suffix K, M, G or T (powers of 1024)."""
    number, suffix = value[:-1], value[-1:].upper()
    if suffix.isdigit():
        number, suffix = value, ""
    if not number.isdigit() or suffix not in _SIZE_SUFFIXES or int(number) == 0:
        raise usage.UsageError(f"--cache-size: {value!r} is not a size (bytes, or 512M, 2G)")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _originURL(value: str) -> str:
    try:
        originBase(value)
    except ValueError as e:
        raise usage.UsageError(f"--origin: {e}") from None
    return value


def _clientRoots(value: str) -> str:
    if value not in CLIENT_ROOTS:
        raise usage.UsageError(f"--client-roots: one of {', '.join(CLIENT_ROOTS)}")
    return value


class TFTPService(ListeningService):
    """
    A TFTP server on one port. Starting raises
    L{twisted.internet.error.CannotListenError} if the port cannot be bound.

    @param tracer: Gets every datagram (L{twisted_udpsuite.tftp.trace}); closed (if it
        has C{close}) when the service stops.
    """

    protocolClass: type[TFTPServerProtocol] = TFTPServerProtocol

    def __init__(
        self,
        backend: IBackend,
        policy: ServerPolicy | None = None,
        *,
        port: int = ports.TFTP,
        interface: str = "",
        reactor: Any = None,
        tracer: IWireTracer | None = None,
    ) -> None:
        reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.tracer = tracer
        self.protocol = self.protocolClass(
            backend, policy, reactor=reactor, interface=interface, tracer=tracer
        )
        root = getattr(self.protocol.backend, "root", None)
        serving = f", serving {root.path}" if root is not None else ""
        super().__init__(
            [Listener("tftp", "udp", port, self.protocol, interface, MAX_PACKET, detail=serving)],
            reactor,
        )

    @property
    def listeningPort(self) -> Any:
        """The bound request port, once started."""
        return self.portOf(0)

    def startService(self) -> None:
        cleanStaleUploads = getattr(self.protocol.backend, "cleanStaleUploads", None)
        if cleanStaleUploads is not None:  # a crash's unfinished uploads (#19 §3)
            cleanStaleUploads()
        super().startService()

    def stopService(self) -> Any:
        d = super().stopService()
        close = getattr(self.tracer, "close", None)
        if close is not None:  # after the ports: their last datagrams are in the file
            if isinstance(d, Deferred):
                d.addBoth(lambda result: (close(), result)[1])
            else:
                close()
        return d


class _RequestTimingProtocol(TFTPServerProtocol):
    """Notes when the last datagram arrived on the request port (for L{InetdTFTPService})."""

    lastRequest = 0.0

    def datagramReceivedAt(self, datagram: bytes, addr: Any, local: str | None) -> None:
        self.lastRequest = self._reactor.seconds()
        super().datagramReceivedAt(datagram, addr, local)


class InetdTFTPService(TFTPService):
    """
    C{twistd -n udpsuite tftp --inetd}: serve the socket inetd handed over, and stop the
    reactor (so the process exits, and inetd watches the socket again) once no request has
    come and no transfer has run for C{idleTimeout} seconds, as C{in.tftpd --timeout} does.

    @param fd: the socket (see L{twisted_udpsuite.activation.inetdSocket}).
    @param stop: called to exit (the reactor's C{stop} by default).
    """

    protocolClass = _RequestTimingProtocol

    #: How often the idle time is looked at while transfers run.
    busyCheck = 1.0

    def __init__(
        self,
        backend: IBackend,
        policy: ServerPolicy | None = None,
        *,
        fd: int,
        idleTimeout: float = INETD_TIMEOUT,
        reactor: Any = None,
        stop: Callable[[], None] | None = None,
        tracer: IWireTracer | None = None,
    ) -> None:
        super().__init__(backend, policy, port=0, reactor=reactor, tracer=tracer)
        self.listeners[0].inherited = fd
        self.idleTimeout = idleTimeout
        self._stop = stop if stop is not None else self._reactor.stop
        self._check: Any = None

    def startService(self) -> None:
        super().startService()
        self.protocol.lastRequest = self._reactor.seconds()
        self._check = self._reactor.callLater(self.idleTimeout, self._lookAtIdleTime)

    def _lookAtIdleTime(self) -> None:
        now = self._reactor.seconds()
        if self.protocol.sessions:
            self.protocol.lastRequest = now  # busy: idle time counts from the end
            self._check = self._reactor.callLater(self.busyCheck, self._lookAtIdleTime)
            return
        idle = now - self.protocol.lastRequest
        if idle < self.idleTimeout:
            self._check = self._reactor.callLater(self.idleTimeout - idle, self._lookAtIdleTime)
            return
        self._check = None
        self.log.info("tftp idle for {idle:.0f} s: exiting (inetd wait mode)", idle=idle)
        self._stop()

    def stopService(self) -> Any:
        if self._check is not None and self._check.active():
            self._check.cancel()
        self._check = None
        return super().stopService()


class Options(ServiceOptions):
    """C{twistd -n udpsuite tftp}: a TFTP server (RFC 1350, 2347-2349, 7440)."""

    defaultPort = ports.TFTP
    optFlags = [
        ["writable", "w", "Accept uploads (off by default)."],
        ["allow-overwrite", None, "Uploads may replace existing files (atomically)."],
        ["no-create", None, "Uploads may not create new files (only with --allow-overwrite)."],
        [
            "inetd",
            None,
            "Serve the UDP socket on fd 0, as inetd hands it ('dgram udp wait'); exit after "
            "--inetd-timeout idle seconds. Log with twistd --syslog or --logfile.",
        ],
        ["keep-stale-uploads", None, "At start, only report unfinished uploads of a crash."],
        ["trace", None, "Log every datagram: opcode, block, options, sizes."],
        [
            "ignore-case",
            None,
            "A name that does not exist as written matches a file that differs only in case.",
        ],
        [
            "fit-mtu",
            None,
            "Lower blksize so DATA fits the MTU of the interface the request came in on.",
        ],
    ]
    optParameters = [
        [
            "max-blksize",
            None,
            MAX_BLKSIZE,
            "Largest blksize granted.",
            numberOption("max-blksize", int, low=MIN_BLKSIZE, high=MAX_BLKSIZE),
        ],
        [
            "max-windowsize",
            None,
            64,
            "Largest windowsize granted.",
            numberOption("max-windowsize", int, low=1, high=MAX_WINDOWSIZE),
        ],
        [
            "max-upload-size",
            None,
            None,
            "Largest upload in bytes (0: no limit).",
            numberOption("max-upload-size", int, low=0, zeroMeansNone=True),
        ],
        [
            "max-transfers",
            None,
            ServerPolicy.maxTransfers,
            "Concurrent transfers in total (with --workers: split between the processes).",
            numberOption("max-transfers", int, low=1),
        ],
        [
            "max-transfers-per-client",
            None,
            ServerPolicy.maxTransfersPerClient,
            "Concurrent transfers per client address (with --workers: in each process).",
            numberOption("max-transfers-per-client", int, low=1),
        ],
        [
            "rate",
            None,
            ServerPolicy.rate,
            "Requests/s per client address (0: unlimited; with --workers: split between the "
            "processes).",
            numberOption("rate", low=0, zeroMeansNone=True),
        ],
        [
            "retries",
            None,
            ServerPolicy.retries,
            "Resends of an unanswered packet before giving up.",
            numberOption("retries", int, low=0, high=100),
        ],
        [
            "timeout",
            None,
            ServerPolicy.timeout,
            "Largest retransmission timeout in seconds (clients may negotiate their own).",
            numberOption("timeout", low=0.05, high=255),
        ],
        [
            "rollover",
            None,
            0,
            "Block number after 65535 when sending: 0 (most peers) or 1.",
            numberOption("rollover", int, low=0, high=1),
        ],
        [
            "workers",
            None,
            1,
            "Processes serving the port (1: this one only; N: this one and N-1 workers "
            "sharing its socket; auto: one per CPU, for production).",
            workersOption,
        ],
        [
            "inetd-timeout",
            None,
            INETD_TIMEOUT,
            "With --inetd: seconds without requests or transfers before exiting.",
            numberOption("inetd-timeout", above=0),
        ],
        [
            "port-range",
            None,
            None,
            "Transfer ports from this range LOW:HIGH, for firewalls (tftpd-hpa -R).",
            _portRange,
        ],
        [
            "map-file",
            None,
            None,
            "Rewrite requested names by this tftpd-hpa remap file (in.tftpd -m).",
        ],
        [
            "client-roots",
            None,
            None,
            "ROOT/<client address>/ per client: 'fallback' (then ROOT) or 'isolate' (only it).",
            _clientRoots,
        ],
        [
            "max-duration",
            None,
            None,
            "Longest transfer in seconds (0: no limit).",
            numberOption("max-duration", low=0, zeroMeansNone=True),
        ],
        [
            "origin",
            None,
            None,
            "Serve the files under this http:// or https:// URL instead of --root (read-only).",
            _originURL,
        ],
        ["cache", None, None, "With --origin: keep fetched files in this directory."],
        ["pcap", None, None, "Write every datagram to this classic pcap file (tcpdump -r)."],
        [
            "cache-size",
            None,
            DEFAULT_CACHE_SIZE,
            "With --cache: its largest size in bytes (or 512M, 2G); least recently used go.",
            _byteSize,
        ],
        [
            "cache-fresh",
            None,
            60.0,
            "With --cache: seconds a fetched file is served before the origin is asked again.",
            numberOption("cache-fresh", low=0),
        ],
    ]

    def opt_refuse_option(self, name: str) -> None:
        """Never grant this option (repeatable): blksize, timeout, tsize or windowsize."""
        if name.lower() not in OPTION_NAMES:
            raise usage.UsageError(
                f"--refuse-option: {name!r} is not one of {', '.join(sorted(OPTION_NAMES))}"
            )
        self["refuse-option"].append(name.lower())

    def __init__(self) -> None:
        super().__init__()
        self["root"] = FilePath(os.getcwd())
        self["refuse-option"] = []
        self.remapRules: RemapRules | None = None

    def opt_root(self, value: str) -> None:
        """Directory to serve (default: the current directory)."""
        path = FilePath(os.path.abspath(value))
        if not path.isdir():
            raise usage.UsageError(f"--root: {value!r} is not a directory")
        self["root"] = path

    opt_r = opt_root

    def postOptions(self) -> None:
        if self["no-create"] and not self["allow-overwrite"]:
            raise usage.UsageError("--no-create without --allow-overwrite allows no upload")
        if self["inetd"] and self["workers"] > 1:
            raise usage.UsageError("--inetd serves in one process: no --workers")
        if self["max-transfers"] < self["workers"]:
            # Each process gets a share of the total; a share of 0 would refuse everything.
            raise usage.UsageError("--max-transfers must be at least --workers")
        if self["origin"] is not None:
            for directoryOnly in ("writable", "ignore-case", "client-roots"):
                if self[directoryOnly]:
                    raise usage.UsageError(f"--origin serves no directory: no --{directoryOnly}")
        if self["cache"] is not None:
            if self["origin"] is None:
                raise usage.UsageError("--cache caches an --origin: give one")
            self["cache"] = os.path.abspath(self["cache"])
            try:
                os.makedirs(self["cache"], exist_ok=True)
            except OSError as e:
                raise usage.UsageError(f"--cache: {e.strerror}: {self['cache']}") from None
        if self["pcap"] is not None:
            if self["workers"] > 1:
                raise usage.UsageError("--pcap is one file: not with --workers")
            self["pcap"] = os.path.abspath(self["pcap"])
            if not os.access(os.path.dirname(self["pcap"]), os.W_OK):
                raise usage.UsageError(f"--pcap: cannot write in {os.path.dirname(self['pcap'])}")
        if self["map-file"] is not None:
            self["map-file"] = os.path.abspath(self["map-file"])  # workers may start elsewhere
            try:
                self.remapRules = RemapRules.fromPath(self["map-file"])
            except OSError as e:
                raise usage.UsageError(f"--map-file: {e.strerror}: {self['map-file']}") from None
            except RemapError as e:
                raise usage.UsageError(f"--map-file {self['map-file']}: {e}") from None

    def toArgv(self) -> list[str]:
        """
        Command-line arguments that parse back to these options.

        Worker processes (L{twisted_udpsuite.tftp.workers}) are started with them so that
        they run the same policy and backend as the parent; built from the parsed values
        (absolute root, every option spelt out) rather than the original command line, so
        a relative path or an abbreviation cannot mean something else in the child.
        """
        argv = ["--port", str(self["port"]), "--interface", self["interface"]]
        argv += ["--root", self["root"].path]
        for name, *_ in self.optFlags:
            if self[name]:
                argv.append(f"--{name}")
        for name, _, default, *_ in self.optParameters:
            value = self[name]
            if value is None and default is None:
                continue  # unset, as in the child
            argv += [f"--{name}", "0" if value is None else str(value)]
        for refused in self["refuse-option"]:
            argv += ["--refuse-option", refused]
        return argv

    def policy(self) -> ServerPolicy:
        """The server policy these options describe."""
        return ServerPolicy(
            limits=ServerOptionLimits(
                maxBlksize=self["max-blksize"],
                maxWindowsize=self["max-windowsize"],
                maxUploadSize=self["max-upload-size"],
                refused=frozenset(self["refuse-option"]),
            ),
            rate=self["rate"],
            maxTransfers=self["max-transfers"],
            maxTransfersPerClient=self["max-transfers-per-client"],
            retries=self["retries"],
            timeout=self["timeout"],
            rollover=self["rollover"],
            portRange=self["port-range"],
            maxDuration=self["max-duration"],
            fitMTU=bool(self["fit-mtu"]),
        )

    def tracer(self, reactor: Any = None) -> IWireTracer | None:
        """The wire trace these options ask for (C{--trace}, C{--pcap}), or None."""
        tracers: list[IWireTracer] = []
        if self["trace"]:
            tracers.append(logTracer())
        if self["pcap"] is not None:
            out = open(self["pcap"], "wb")  # noqa: SIM115 (closed by the service)
            tracers.append(PcapWriter(out, reactorOr(reactor)))
        return TracerGroup(tracers) if tracers else None

    def backend(self, reactor: Any = None) -> IBackend:
        """
        The backend these options describe: the root (or the origin, through its cache),
        behind the remap rules if any.
        """
        backend: IBackend
        if self["origin"] is not None:
            cache = None
            if self["cache"] is not None:
                cache = OriginCache(
                    FilePath(self["cache"]),
                    self["cache-size"],
                    freshFor=self["cache-fresh"],
                    clock=reactor,
                )
            backend = HTTPOriginBackend(self["origin"], cache=cache, reactor=reactor)
        else:
            backend = FilesystemBackend(
                self["root"],
                writable=bool(self["writable"]),
                allowCreate=not self["no-create"],
                allowOverwrite=bool(self["allow-overwrite"]),
                maxUploadSize=self["max-upload-size"],
                keepStaleUploads=bool(self["keep-stale-uploads"]),
                ignoreCase=bool(self["ignore-case"]),
                clientRoots=self["client-roots"],
            )
        if self.remapRules is not None:
            backend = RemappingBackend(backend, self.remapRules)
        return backend


def makeService(options: Options, reactor: Any = None) -> Service:
    """
    Build the TFTP service from parsed L{Options}: L{TFTPService}, or with C{--workers N}
    (N > 1) a L{twisted_udpsuite.tftp.workers.MultiProcessTFTPService}.
    """
    if options["workers"] > 1:
        # Imported here: the workers module builds on this one.
        from twisted_udpsuite.tftp.workers import MultiProcessTFTPService

        return MultiProcessTFTPService(options, reactor=reactor)
    if options["inetd"]:
        return InetdTFTPService(
            options.backend(reactor),
            options.policy(),
            fd=inetdSocket(0),
            idleTimeout=options["inetd-timeout"],
            reactor=reactor,
            tracer=options.tracer(reactor),
        )
    return TFTPService(
        options.backend(reactor),
        options.policy(),
        port=options["port"],
        interface=options["interface"],
        reactor=reactor,
        tracer=options.tracer(reactor),
    )


SPEC = ServiceSpec(
    "tftp",
    "TFTP server (RFC 1350, 2347-2349, 7440)",
    Options,
    makeService,
    offers=(Offer("tftp", "udp"),),
)
