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
from twisted_udpsuite.localaddress import listenUDP
from twisted_udpsuite.reactors import reactorOr
from twisted_udpsuite.service import ServiceOptions, ServiceSpec, numberOption
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
        self.listeningPort = listenUDP(
            self._reactor, self.port, self.protocol, self.interface, MAX_PACKET
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
            "Concurrent transfers in total.",
            numberOption("max-transfers", int, low=1),
        ],
        [
            "max-transfers-per-client",
            None,
            ServerPolicy.maxTransfersPerClient,
            "Concurrent transfers per client address.",
            numberOption("max-transfers-per-client", int, low=1),
        ],
        [
            "rate",
            None,
            ServerPolicy.rate,
            "Requests/s per client address (0: unlimited).",
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
