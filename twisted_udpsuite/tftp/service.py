# -*- test-case-name: tests.tftp.test_service -*-
"""
The TFTP service for C{twistd -n udpsuite tftp}: options for every limit, and the listening
port's lifetime (running transfers are told and stopped when the service stops).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.filepath import FilePath

from twisted_udpsuite import ports
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import ServiceOptions, ServiceSpec
from twisted_udpsuite.tftp.backend import FilesystemBackend, IBackend
from twisted_udpsuite.tftp.options import (
    MAX_BLKSIZE,
    MAX_WINDOWSIZE,
    MIN_BLKSIZE,
    ServerOptionLimits,
)
from twisted_udpsuite.tftp.server import MAX_PACKET, ServerPolicy, TFTPServerProtocol

__all__ = ["SPEC", "Options", "TFTPService", "makeService"]


class TFTPService(Service):
    """
    A TFTP server on one port. L{startService} raises
    L{twisted.internet.error.CannotListenError} if the port cannot be bound.
    """

    log = Logger(namespace="twisted_udpsuite.tftp")

    def __init__(
        self,
        backend: IBackend,
        policy: ServerPolicy | None = None,
        *,
        port: int = ports.TFTP,
        interface: str = "",
        reactor: Any = None,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.port = port
        self.interface = interface
        self.protocol = TFTPServerProtocol(
            backend, policy, reactor=self._reactor, interface=interface
        )
        self.listeningPort: Any = None

    def startService(self) -> None:
        self.listeningPort = self._reactor.listenUDP(
            self.port, self.protocol, interface=self.interface, maxPacketSize=MAX_PACKET
        )
        super().startService()
        root = getattr(self.protocol.backend, "root", None)
        self.log.info(
            "tftp listening on {interface}:{port}{root}",
            interface=self.interface or "*",
            port=self.listeningPort.getHost().port,
            root=f", serving {root.path}" if root is not None else "",
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.listeningPort = self.listeningPort, None
        if port is None:
            return None
        return maybeDeferred(port.stopListening)


def _count(name: str, low: int = 0, high: int | None = None, zeroIsNone: bool = False) -> Any:
    def coerce(value: str) -> int | None:
        if not value.isdigit():
            raise usage.UsageError(f"--{name}: {value!r} is not a whole number")
        number = int(value)
        if number < low or (high is not None and number > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise usage.UsageError(f"--{name}: {number} is outside {bound}")
        return None if zeroIsNone and number == 0 else number

    return coerce


def _seconds(name: str) -> Any:
    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise usage.UsageError(f"--{name}: {value!r} is not a number") from None
        if not 0.05 <= number <= 255:
            raise usage.UsageError(f"--{name}: must be within 0.05..255 seconds")
        return number

    return coerce


def _rate(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--rate: {value!r} is not a number") from None
    if number < 0:
        raise usage.UsageError("--rate: must not be negative")
    return number or None


class Options(ServiceOptions):
    """C{twistd -n udpsuite tftp}: a TFTP server (RFC 1350, 2347-2349, 7440)."""

    defaultPort = ports.TFTP
    optFlags = [
        ["writable", "w", "Accept uploads (off by default)."],
        ["allow-overwrite", None, "Uploads may replace existing files (atomically)."],
        ["no-create", None, "Uploads may not create new files (only with --allow-overwrite)."],
    ]
    optParameters = [
        [
            "max-blksize",
            None,
            MAX_BLKSIZE,
            "Largest blksize granted.",
            _count("max-blksize", MIN_BLKSIZE, MAX_BLKSIZE),
        ],
        [
            "max-windowsize",
            None,
            64,
            "Largest windowsize granted.",
            _count("max-windowsize", 1, MAX_WINDOWSIZE),
        ],
        [
            "max-upload-size",
            None,
            None,
            "Largest upload in bytes (0: no limit).",
            _count("max-upload-size", zeroIsNone=True),
        ],
        [
            "max-transfers",
            None,
            ServerPolicy.maxTransfers,
            "Concurrent transfers in total.",
            _count("max-transfers", 1),
        ],
        [
            "max-transfers-per-client",
            None,
            ServerPolicy.maxTransfersPerClient,
            "Concurrent transfers per client address.",
            _count("max-transfers-per-client", 1),
        ],
        [
            "rate",
            None,
            ServerPolicy.rate,
            "Requests/s per client address (0: unlimited).",
            _rate,
        ],
        [
            "retries",
            None,
            ServerPolicy.retries,
            "Resends of an unanswered packet before giving up.",
            _count("retries", 0, 100),
        ],
        [
            "timeout",
            None,
            ServerPolicy.timeout,
            "Largest retransmission timeout in seconds (clients may negotiate their own).",
            _seconds("timeout"),
        ],
        [
            "rollover",
            None,
            0,
            "Block number after 65535 when sending: 0 (most peers) or 1.",
            _count("rollover", 0, 1),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["root"] = FilePath(os.getcwd())

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

    def policy(self) -> ServerPolicy:
        """The server policy these options describe."""
        return ServerPolicy(
            limits=ServerOptionLimits(
                maxBlksize=self["max-blksize"],
                maxWindowsize=self["max-windowsize"],
                maxUploadSize=self["max-upload-size"],
            ),
            rate=self["rate"],
            maxTransfers=self["max-transfers"],
            maxTransfersPerClient=self["max-transfers-per-client"],
            retries=self["retries"],
            timeout=self["timeout"],
            rollover=self["rollover"],
        )

    def backend(self) -> FilesystemBackend:
        """The filesystem backend these options describe."""
        return FilesystemBackend(
            self["root"],
            writable=bool(self["writable"]),
            allowCreate=not self["no-create"],
            allowOverwrite=bool(self["allow-overwrite"]),
            maxUploadSize=self["max-upload-size"],
        )


def makeService(options: Options, reactor: Any = None) -> TFTPService:
    """Build the TFTP service from parsed L{Options}."""
    return TFTPService(
        options.backend(),
        options.policy(),
        port=options["port"],
        interface=options["interface"],
        reactor=reactor,
    )


SPEC = ServiceSpec("tftp", "TFTP server (RFC 1350, 2347-2349, 7440)", Options, makeService)
