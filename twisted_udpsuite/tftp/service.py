# -*- test-case-name: tests.tftp.test_tap -*-
"""
The TFTP service: the listening port's lifetime (running transfers are told and stopped when
the service stops), and its inetd variant.

C{twistd -n udpsuite tftp} builds these from its options in L{twisted_udpsuite.tftp.tap};
with C{--workers N} (N > 1) it builds L{twisted_udpsuite.tftp.workerpool}'s multi-process
service instead. Library users keep L{TFTPService}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorCore

from twisted_udpsuite import ports
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import Listener, ListeningService
from twisted_udpsuite.tftp.backend import IBackend
from twisted_udpsuite.tftp.server import MAX_PACKET, ServerPolicy, TFTPServerProtocol
from twisted_udpsuite.tftp.trace import IWireTracer

__all__ = ["INETD_TIMEOUT", "InetdTFTPService", "TFTPService"]

INETD_TIMEOUT = 900.0
"""C{--inetd-timeout}'s default: idle seconds before exiting, C{in.tftpd --timeout}'s default."""


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
        reactor: IReactorNetwork | None = None,
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
        if cleanStaleUploads is not None:  # a crash's unfinished uploads
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

    def datagramReceivedAt(self, datagram: bytes, addr: tuple[str, int], local: str | None) -> None:
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

    protocolClass: type[_RequestTimingProtocol] = _RequestTimingProtocol
    protocol: _RequestTimingProtocol

    #: How often the idle time is looked at while transfers run.
    busyCheck = 1.0

    def __init__(
        self,
        backend: IBackend,
        policy: ServerPolicy | None = None,
        *,
        fd: int,
        idleTimeout: float = INETD_TIMEOUT,
        reactor: IReactorNetwork | None = None,
        stop: Callable[[], None] | None = None,
        tracer: IWireTracer | None = None,
    ) -> None:
        super().__init__(backend, policy, port=0, reactor=reactor, tracer=tracer)
        self.listeners[0].inherited = fd
        self.idleTimeout = idleTimeout
        # The reactor stops (the process exits) unless told otherwise.
        self._stop = stop if stop is not None else cast(IReactorCore, self._reactor).stop
        self._check: IDelayedCall | None = None

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
