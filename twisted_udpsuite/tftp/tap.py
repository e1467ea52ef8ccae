# -*- test-case-name: tests.tftp.test_tap -*-
"""
C{twistd -n udpsuite tftp}: the options for every limit, and L{makeService}, which builds
the service they describe (as Twisted's own C{tap} modules do).

With C{--workers N} (N > 1) L{makeService} returns the multi-process service of
L{twisted_udpsuite.tftp.workerpool}; with C{--inetd}, L{InetdTFTPService}; else
L{TFTPService}.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.activation import inetdSocket
from twisted_udpsuite.drain import DEFAULT_DRAIN
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import Offer, ServedRootOptions, ServiceSpec, numberOption
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
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import INETD_TIMEOUT, InetdTFTPService, TFTPService
from twisted_udpsuite.tftp.trace import IWireTracer, PcapWriter, TracerGroup, logTracer
from twisted_udpsuite.tftp.workerpool import IReactorProcessNetwork, MultiProcessTFTPService

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "MAX_WORKERS",
    "SPEC",
    "Options",
    "PortRange",
    "makeService",
    "workersOption",
]

MAX_WORKERS = 64
"""Largest C{--workers}: far above any useful count, low enough to catch a typo."""

_workerCount = numberOption("workers", int, low=1, high=MAX_WORKERS)


def workersOption(value: str) -> int:
    """C{--workers}: a number, or C{auto} (one process per CPU, at most L{MAX_WORKERS})."""
    if value.strip().lower() == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    return int(_workerCount(value))


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


class Options(ServedRootOptions):
    """C{twistd -n udpsuite tftp}: a TFTP server (RFC 1350, 2347-2349, 7440)."""

    defaultPort = ports.TFTP
    optFlags: list[list[str | None]] = [
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
    # name, short name, default, help, coerce: of no one type (Twisted declares none)
    optParameters: list[list[Any]] = [
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
        self["refuse-option"] = []
        self.remapRules: RemapRules | None = None

    opt_r = ServedRootOptions.opt_root

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

        Worker processes (L{twisted_udpsuite.tftp.workerprocess}) are started with them so that
        they run the same policy and backend as the parent; built from the parsed values
        (absolute root, every option spelt out) rather than the original command line, so
        a relative path or an abbreviation cannot mean something else in the child.
        """
        argv = ["--port", str(self["port"]), "--interface", self["interface"]]
        argv += ["--root", self["root"].path]
        for name, *_ in self.optFlags:
            if name is not None and self[name]:
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

    def tracer(self, reactor: IReactorTime | None = None) -> IWireTracer | None:
        """The wire trace these options ask for (C{--trace}, C{--pcap}), or None."""
        tracers: list[IWireTracer] = []
        if self["trace"]:
            tracers.append(logTracer())
        if self["pcap"] is not None:
            out = open(self["pcap"], "wb")  # noqa: SIM115 (closed by the service)
            tracers.append(PcapWriter(out, reactorOr(reactor)))
        return TracerGroup(tracers) if tracers else None

    def backend(self, reactor: IReactorNetwork | None = None) -> IBackend:
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


def makeService(options: Options, reactor: IReactorProcessNetwork | None = None) -> IService:
    """
    Build the TFTP service from parsed L{Options}: L{TFTPService}; with C{--inetd} an
    L{InetdTFTPService}; with C{--workers N} (N > 1) a L{MultiProcessTFTPService}, whose
    worker processes parse L{Options.toArgv} back.
    """
    reactor = reactorOr(reactor)
    if options["workers"] > 1:
        return MultiProcessTFTPService(
            options.toArgv(),
            options.policy(),
            options.backend(reactor),
            processes=options["workers"],
            port=options["port"],
            interface=options["interface"],
            tracer=options.tracer(reactor),
            # Each worker drains its own transfers on SIGTERM, for the top-level --drain
            # (put in these options by twisted_udpsuite.tap).
            drain=float(options.get("drain", DEFAULT_DRAIN)),
            reactor=reactor,
        )
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
