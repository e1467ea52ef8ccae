"""
C{twistd -n udpsuite [SUBCOMMAND] [OPTIONS]}: the suite's services.

A protocol joins by adding its L{ServiceSpec} to L{SERVICES}; nothing else
here changes.  With no subcommand every service starts with its defaults,
except those whose spec says otherwise (C{ipmsg}, which broadcasts).
Errors a user can cause (a bad option, a port in use, a missing root) end
the process with one line on stderr and a non-zero status, never a
traceback; the services themselves raise ordinary exceptions, so a Twisted
app that embeds them sees those instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, LoggingFile
from twisted.python import usage

from twisted_udpsuite import activation
from twisted_udpsuite.chat import service as chatroom
from twisted_udpsuite.discovery import service as responder
from twisted_udpsuite.drain import DEFAULT_DRAIN, DrainingMultiService
from twisted_udpsuite.echo import service as echo
from twisted_udpsuite.files import service as files
from twisted_udpsuite.ipmsg import service as ipmsg
from twisted_udpsuite.metrics import MetricsService, SuiteMetrics
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import ServiceSpec, checkInterface, checkPort, numberOption
from twisted_udpsuite.tftp import tap as tftp

__all__ = ["SERVICES", "Options", "makeService"]

#: Every service, in start order.
SERVICES: list[ServiceSpec] = [
    echo.SPEC,
    files.SPEC,
    tftp.SPEC,
    chatroom.SPEC,
    responder.SPEC,
    ipmsg.SPEC,
]

_PROGRAM = "twistd udpsuite"


class Options(usage.Options):
    """Options of C{twistd udpsuite}; each service is a subcommand."""

    synopsis = "[--interface ADDR] [--metrics-port P] [--drain SECONDS] [SUBCOMMAND [OPTIONS]]"
    longdesc = (
        "With no subcommand, every service starts on its default port "
        "(except ipmsg, which broadcasts to the LAN: ask for it by name)."
    )
    optParameters = [
        [
            "interface",
            "i",
            None,
            "With no subcommand: the address every service binds "
            "('' all IPv4 (default), '::' IPv4+IPv6, or one address).",
            checkInterface,
        ],
        # Operations: metrics and drain apply to every service started.
        [
            "metrics-port",
            None,
            None,
            "Serve Prometheus metrics over HTTP on this TCP port (off when absent).",
            lambda value: checkPort(value, "--metrics-port"),
        ],
        [
            "metrics-interface",
            None,
            "127.0.0.1",
            "The address the metrics port binds (loopback only by default).",
            lambda value: _renamed(checkInterface, value, "--interface", "--metrics-interface"),
        ],
        [
            "drain",
            None,
            DEFAULT_DRAIN,
            "Seconds a stop (SIGTERM) lets running transfers finish before cutting them.",
            numberOption("drain", low=0),
        ],
    ]
    subCommands = [(spec.name, None, spec.options, spec.description) for spec in SERVICES]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, turning a usage error into one line on stderr and exit status 2."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            sys.stderr.write(f"{_PROGRAM}: error: {e} (see: {_PROGRAM} --help)\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        if self.subCommand is not None:
            self.selected = [(_spec(self.subCommand), self.subOptions)]
            return
        self.selected = []
        for spec in SERVICES:
            if not spec.startsByDefault:
                continue
            sub = spec.options()
            sub.parseOptions(  # type: ignore[no-untyped-call]
                ["--interface", self["interface"]] if self["interface"] is not None else []
            )
            self.selected.append((spec, sub))
        # A service that describes the others (the discovery responder) learns
        # what else runs here and on which ports.
        for _, sub in self.selected:
            describe = getattr(sub, "describeSiblings", None)
            if describe is not None:
                describe(self.selected)


def _renamed(check: Any, value: str, option: str, name: str) -> Any:
    """C{check(value)}, its error naming the option C{name} instead of C{option}."""
    try:
        return check(value)
    except usage.UsageError as e:
        raise usage.UsageError(str(e).replace(option, name, 1)) from None


def _spec(name: str) -> ServiceSpec:
    return next(spec for spec in SERVICES if spec.name == name)


class _ExitOnStartupError(DrainingMultiService):
    """
    Under twistd, a service that cannot start ends the process with one line.

    The ports are bound in C{privilegedStartService} (before twistd drops
    privileges), or in C{startService} when nothing called that.  twistd prints
    a traceback for an exception raised while the services start; C{SystemExit}
    it passes on quietly, and that is how C{twistd -n} ends: one line on the
    real standard error (twistd has redirected C{sys.stderr} into its log by
    then) and status 1, its pid file removed.  A daemon (no C{-n}) has no terminal left, and its
    first process waits for a word from the daemon: an ordinary exception is
    the one twistd sends it (the first process prints it and exits with 1,
    and twistd removes the pid file).

    @ivar daemon: whether twistd runs the services as a daemon.
    @ivar pidfile: twistd's pid file (C{--pidfile}), if any.
    """

    log = Logger(namespace="twisted_udpsuite")

    def __init__(self, daemon: bool = False, pidfile: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.daemon = daemon
        self.pidfile = pidfile

    def privilegedStartService(self) -> None:
        self._failingInOneLine(super().privilegedStartService)

    def startService(self) -> None:
        self._failingInOneLine(super().startService)

    def _failingInOneLine(self, start: Callable[[], None]) -> None:
        try:
            start()
        except CannotListenError as e:
            self._fail(f"cannot listen on {e.interface or '*'}:{e.port}: {_reason(e.socketError)}")
        except (OSError, ValueError) as e:
            self._fail(str(e))

    def _fail(self, message: str) -> None:
        for child in list(self):
            if child.running or getattr(child, "bound", False):
                child.stopService()
        self.log.error("{message}", message=message)
        if self.daemon:
            raise OSError(message)
        if self.pidfile:
            with contextlib.suppress(OSError):
                os.remove(self.pidfile)
        _realStderr().write(f"{_PROGRAM}: error: {message}\n")
        raise SystemExit(1)


def _realStderr() -> TextIO:
    """Standard error, even when twistd has pointed C{sys.stderr} into its log."""
    if isinstance(sys.stderr, LoggingFile) and sys.__stderr__ is not None:
        return sys.__stderr__
    return sys.stderr


def _reason(error: Any) -> str:
    return getattr(error, "strerror", None) or str(error)


def makeService(options: Options, reactor: IReactorNetwork | None = None) -> MultiService:
    """
    Build every selected service under one parent.

    Sockets passed by systemd (L{twisted_udpsuite.activation}) are given to the services'
    listeners here, before twistd forks or starts logging, so that a socket no service
    takes is one line on stderr and exit status 1.

    @param reactor: where the services listen (the global reactor if C{None};
        tests pass a L{twisted_udpsuite.testing.MemoryHost}).
    """
    reactor = reactorOr(reactor)
    twistd = getattr(options, "parent", None)  # twistd's own options, when run by it
    if twistd is None:
        top = _ExitOnStartupError()
    else:
        top = _ExitOnStartupError(not twistd.get("nodaemon"), twistd.get("pidfile"))
    top.drainTimeout = options["drain"]
    metrics = SuiteMetrics() if options["metrics-port"] is not None else None
    try:
        for spec, sub in options.selected:
            sub["drain"] = options["drain"]  # for TFTP's worker processes
            child: IService = spec.makeService(sub, reactor)
            child.setName(spec.name)  # type: ignore[no-untyped-call]
            child.setServiceParent(top)  # type: ignore[no-untyped-call]
            if metrics is not None:
                metrics.watch(spec.name, child)
        if metrics is not None:
            MetricsService(  # type: ignore[no-untyped-call]
                metrics, options["metrics-port"], options["metrics-interface"], reactor
            ).setServiceParent(top)
        listeners = [listener for child in top for listener in getattr(child, "listeners", ())]
        activation.assign(activation.fromEnvironment(), listeners)
    except activation.ActivationError as e:
        _realStderr().write(f"{_PROGRAM}: error: {e}\n")
        raise SystemExit(1) from None
    return top
