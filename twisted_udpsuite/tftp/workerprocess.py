# -*- test-case-name: tests.tftp.test_workerpool -*-
"""
One worker process of C{twistd -n udpsuite tftp --workers N}, started by
L{twisted_udpsuite.tftp.workerpool.WorkerPool}; not meant to be run by hand. Its command
line::

    python -m twisted_udpsuite.tftp.workerprocess --fd 3 --index I [the parent's tftp options]

It serves requests arriving on the inherited socket C{--fd} (adopted, never bound here) with
the same options as the parent, its share of the totals being L{processPolicy} for process
C{I} of C{--workers}. Its descriptors, set up by the parent:

  - 0: a pipe only the parent writes to; end of file means the parent is gone, and the worker
    stops (the transfers it runs are told so), even if the parent was SIGKILLed.
  - 1: its log events, one JSON object per line, which the parent re-emits with its id.
  - 2: anything else it writes (a traceback at start-up), logged by the parent as warnings.

SIGINT is ignored: a Ctrl-C in a terminal reaches the whole process group, and it is the
parent's to decide (it stops its workers in order). SIGTERM stops the worker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, cast

from twisted.internet import abstract, fdesc
from twisted.internet.defer import succeed
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorSocket,
)
from twisted.logger import ILogObserver, Logger, eventAsJSON, formatEvent, globalLogBeginner
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from twisted_udpsuite.activation import describe
from twisted_udpsuite.drain import DEFAULT_DRAIN
from twisted_udpsuite.localaddress import adoptDatagramPort
from twisted_udpsuite.reactors import IReactorUDPTime
from twisted_udpsuite.tftp.server import MAX_PACKET, TFTPServerProtocol
from twisted_udpsuite.tftp.tap import Options
from twisted_udpsuite.tftp.workerpool import TEXT_FIELD, processPolicy

if TYPE_CHECKING:
    from twisted.internet.posixbase import PosixReactorBase

__all__ = [
    "IReactorWorker",
    "JSONLineObserver",
    "ParentWatch",
    "WorkerOptions",
    "main",
    "serve",
]

log = Logger(namespace="twisted_udpsuite.tftp.workers")


class IReactorWorker(
    IReactorUDPTime, IReactorSocket, IReactorFDSet, IReactorCore, IReactorFromThreads, Interface
):
    """What a worker process asks of its reactor: its socket and timers, the parent's pipe,
    stopping, and the SIGTERM handler's call back into the reactor."""


class WorkerOptions(Options):
    """The parent's TFTP L{Options}, plus the inherited socket and this worker's index."""

    optParameters = [
        *Options.optParameters,
        ["fd", None, 3, "Descriptor of the inherited request socket.", int],
        ["index", None, 1, "This worker's number (1 to --workers minus 1).", int],
        ["drain", None, DEFAULT_DRAIN, "Seconds SIGTERM lets running transfers finish.", float],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if not 1 <= self["index"] < self["workers"]:
            raise usage.UsageError("--index must be from 1 to --workers minus 1")


class ParentWatch(abstract.FileDescriptor):
    """
    Reads (and discards) the pipe from the parent; calls C{onClose} when it closes.

    The parent never writes to it: only the parent holds its write end, so it closes when
    the parent ends, however it ends.
    """

    def __init__(self, reactor: IReactorFDSet, fd: int, onClose: Callable[[], None]) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._onClose = onClose
        fdesc.setNonBlocking(fd)  # type: ignore[no-untyped-call]  # (unannotated in Twisted)

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> object:
        # (fdesc is unannotated in Twisted)
        return fdesc.readFromFD(self._fd, lambda data: None)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # (unannotated)
        self._onClose()


@implementer(ILogObserver)
class JSONLineObserver:
    """
    Writes each log event as one line of JSON (L{eventAsJSON} never contains a newline),
    with its text already formatted in L{TEXT_FIELD}: here the values are still whole.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        event = dict(event)
        if event.get("log_format") is not None:
            event[TEXT_FIELD] = formatEvent(event)
        try:
            self._out.write(eventAsJSON(event) + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass  # the parent is gone; the pipe watch ends us


def serve(options: WorkerOptions, reactor: IReactorWorker) -> Any:
    """
    Adopt the inherited socket and serve on it; return the port (a C{udp.Port}: its
    C{protocol} and C{maxThroughput} are not in
    L{twisted.internet.interfaces.IListeningPort}).
    """
    processes, index = options["workers"], options["index"]
    protocol = TFTPServerProtocol(
        options.backend(),
        processPolicy(options.policy(), processes, index),
        reactor=reactor,
        interface=options["interface"],
        tracer=options.tracer(reactor),
    )
    fd = options["fd"]
    port: Any = adoptDatagramPort(reactor, fd, describe(fd).family, protocol, MAX_PACKET)
    os.close(fd)  # the port holds its own duplicate
    port.maxThroughput = 1  # one request per reactor turn, as in the parent
    log.info(
        "tftp worker {index} serving {interface}:{port}",
        index=index,
        interface=options["interface"] or "*",
        port=port.getHost().port,
    )
    return port


def main(argv: list[str] | None = None) -> None:
    """Run one worker until the parent goes away or SIGTERM arrives."""
    options = WorkerOptions()
    try:
        options.parseOptions(  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
            sys.argv[1:] if argv is None else argv
        )
    except usage.UsageError as e:
        sys.stderr.write(f"tftp worker: error: {e}\n")
        raise SystemExit(2) from None

    from twisted.internet import reactor as installed

    reactor = cast(IReactorWorker, installed)

    out = open(os.dup(1), "w", encoding="utf-8")  # lives as long as the process
    globalLogBeginner.beginLoggingTo([JSONLineObserver(out)], redirectStandardIO=True)

    stopping: list[str] = []
    served: list[Any] = []  # the request port, once serving

    def stop(why: str) -> None:
        # The parent both closes the pipe and sends TERM: the second one finds us stopping.
        if stopping:
            return
        stopping.append(why)
        log.info("tftp worker {index}: {why}, stopping", index=options["index"], why=why)
        # Running transfers finish first, for up to --drain seconds.
        drained = served[0].protocol.drain(options["drain"]) if served else succeed(None)
        drained.addBoth(lambda _: stopReactor())

    def stopReactor() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    # Our own handlers, set before "serving" is logged and kept by the reactor (run without
    # its own), so a TERM right after start-up still stops the worker in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop, "SIGTERM received"))
    watch = ParentWatch(reactor, 0, lambda: stop("parent gone"))
    watch.startReading()  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
    try:
        served.append(serve(options, reactor))
    except Exception:
        log.failure("tftp worker {index} cannot serve", index=options["index"])
        raise SystemExit(1) from None
    # (a POSIX reactor's run, which IReactorCore.run does not declare the keyword of)
    cast("PosixReactorBase", reactor).run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
