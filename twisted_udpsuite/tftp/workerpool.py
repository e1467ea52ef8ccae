# -*- test-case-name: tests.tftp.test_workerpool -*-
"""
C{twistd -n udpsuite tftp --workers N}: N processes serve one TFTP port.

One Python process runs out of CPU long before a forking server such as tftpd-hpa's
C{in.tftpd} does, because every block of every transfer goes through one reactor. Here the
parent binds the request socket itself (so a port in use still fails in one line before
anything is spawned), serves on it as usual, and starts N-1 worker processes that adopt the
same socket (C{reactor.adoptDatagramPort}, the descriptor passed as the child's fd 3). The
kernel hands each request datagram to one of the N processes, and that process then runs the
whole transfer on its own ephemeral port. N counts every process that serves, the parent
included: C{--workers 2} on a 2-core machine is two busy processes, not two plus an idle
supervisor, and C{--workers 1} is exactly the single-process service.

Each process takes one request per reactor turn (the request port's C{maxThroughput} is 1):
otherwise the first process to wake could drain a queued burst of requests on its own while
the others stay idle; a process busy with transfers also wakes later, so it takes fewer.

Limits across processes (L{processPolicy}): C{--max-transfers} and C{--rate} (with its
burst) are split between the processes, so their sum stays the configured total; a process
whose share is used up refuses even if another still has room. C{--max-transfers-per-client}
holds in each process, so one client may run up to N times that many transfers in total.

Lifecycle: a worker reads its fd 0, a pipe whose other end only the parent holds, and stops
when it closes, so workers end with the parent even on SIGKILL. The parent stops its workers
on service stop (TERM, then KILL after a timeout), and restarts one that ends on its own,
after a delay that doubles with each quick failure up to a bound. Workers write their log
events as JSON lines on fd 1; the parent re-emits them with the worker's id and pid, so the
one-event-per-transfer log carries on as before, and logs fd 2 (stderr) lines as warnings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    ILogObserver,
    Logger,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import Interface

from twisted_udpsuite import ports
from twisted_udpsuite.drain import DEFAULT_DRAIN
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.service import Listener
from twisted_udpsuite.tftp.backend import IBackend
from twisted_udpsuite.tftp.server import ServerPolicy
from twisted_udpsuite.tftp.service import TFTPService
from twisted_udpsuite.tftp.trace import IWireTracer

__all__ = [
    "IReactorProcessTime",
    "IReactorProcessNetwork",
    "TEXT_FIELD",
    "WORKER_MODULE",
    "MultiProcessTFTPService",
    "WorkerPool",
    "processPolicy",
    "share",
]

WORKER_MODULE = "twisted_udpsuite.tftp.workerprocess"
"""The module a worker process runs (C{python -m ...}); see
L{twisted_udpsuite.tftp.workerprocess}."""

SOCKET_FD = 3
"""The descriptor number of the shared request socket in a worker."""

_MAX_LINE = 1 << 20  # a worker's log line longer than this is cut (a runaway stderr)


class IReactorProcessTime(IReactorProcess, IReactorTime):
    """A reactor for L{WorkerPool}: it spawns the workers and times their restarts."""


class IReactorProcessNetwork(IReactorProcessTime, IReactorNetwork, Interface):
    """A reactor for L{MultiProcessTFTPService}: its own TFTP server, and the workers."""


def share(total: int, processes: int, index: int) -> int:
    """
    Process C{index}'s part of C{total}, so that the parts of all C{processes} add up to it.

    The first C{total % processes} processes get one more.
    """
    return total // processes + (1 if index < total % processes else 0)


def processPolicy(policy: ServerPolicy, processes: int, index: int) -> ServerPolicy:
    """
    The policy process C{index} of C{processes} runs, given the policy for the whole server.

    Totals are split, so the whole server never exceeds them: C{maxTransfers} by L{share}
    (the options insist on at least one per process), the request C{rate} and its C{burst}
    evenly (the kernel spreads a client's requests between the processes, so each sees
    about 1/N of them; the burst never drops below 1, which a token bucket needs). The
    per-client transfer count stays as it is in each process: splitting it would refuse a
    client at random below its limit, depending on which process the kernel picked.
    """
    if processes == 1:
        return policy
    return replace(
        policy,
        maxTransfers=share(policy.maxTransfers, processes, index),
        rate=None if policy.rate is None else policy.rate / processes,
        burst=max(1.0, policy.burst / processes),
    )


TEXT_FIELD = "tftpWorkerText"
"""
The field in which a worker sends an event's text, formatted where the values are whole
(JSON turns a tuple into a list and L{twisted.logger.eventAsJSON}'s flattening drops
format specs).
"""


class WorkerProtocol(ProcessProtocol):
    """
    The parent's end of one worker: splits its output into lines for the L{WorkerPool}.

    @ivar index: The worker's number (1 to N-1; the parent is process 0).
    @ivar ended: Fires (with None) when the process has ended and been accounted for.
    """

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.pid: int | None = None
        self.started = pool._reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}

    @property
    def process(self) -> IProcessTransport:
        """The worker's process, once spawned."""
        transport = self.transport
        assert transport is not None  # (spawnProcess connects it at once)
        return transport

    def connectionMade(self) -> None:
        self.pid = self.process.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > _MAX_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def _line(self, childFD: int, line: bytes) -> None:
        if not line.strip():
            return
        if childFD == 1:
            self.pool.relayEvent(self, line)
        else:
            self.pool.relayText(self, line)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._buffers.items():
            if rest:
                self._line(childFD, rest)
        self._buffers = {}
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool:
    """
    Runs C{count} worker processes on one shared socket, restarts those that end on their
    own, and stops them all on request.

    @param command: Builds a worker's argv from its index (the executable first).
    @param count: How many workers (numbered 1 to C{count}).
    @param reactor: Spawns the processes and times restarts (L{IReactorProcess},
        L{IReactorTime}).
    @param observer: Receives the workers' log events (the global log publisher by default).
    @param env: The workers' environment (this process's by default).
    @param minBackoff: Delay before restarting a worker that failed after a stable run.
    @param maxBackoff: Longest delay: each quick failure doubles the previous one up to it.
    @param stableAfter: A worker that ran this long (s) before ending resets the backoff.
    @param stopTimeout: Seconds from TERM to KILL when stopping.
    """

    log = Logger(namespace="twisted_udpsuite.tftp.workers")

    def __init__(
        self,
        command: Callable[[int], list[str]],
        count: int,
        *,
        reactor: IReactorProcessTime | None = None,
        observer: ILogObserver | None = None,
        env: dict[str, str] | None = None,
        minBackoff: float = 0.5,
        maxBackoff: float = 30.0,
        stableAfter: float = 10.0,
        stopTimeout: float = 5.0,
    ) -> None:
        self._command = command
        self.count = count
        self._reactor = reactorOr(reactor)
        self._observer = observer if observer is not None else globalLogPublisher
        self._env = env
        self.minBackoff = minBackoff
        self.maxBackoff = maxBackoff
        self.stableAfter = stableAfter
        self.stopTimeout = stopTimeout
        self.workers: dict[int, WorkerProtocol] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._fd: int | None = None
        self._stopping = False

    def start(self, fd: int) -> None:
        """Start every worker on the socket C{fd} (a descriptor of this process)."""
        self._fd = fd
        self._stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping or self._fd is None:
            return
        argv = self._command(index)
        worker = WorkerProtocol(self, index)
        env = dict(os.environ) if self._env is None else self._env
        try:
            self._reactor.spawnProcess(
                worker,
                argv[0],
                argv,
                env=env,
                # 0: the pipe whose closing tells the worker that we are gone;
                # 1: its log events; 2: its stderr; 3: the shared request socket.
                childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: self._fd},
            )
        except Exception as e:
            self.log.error("cannot start tftp worker {worker}: {error}", worker=index, error=e)
            self._scheduleRestart(index)
            return
        self.workers[index] = worker
        self.log.info("tftp worker {worker} started (pid {pid})", worker=index, pid=worker.pid)

    def _ended(self, worker: WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self._stopping:
            return
        if self._reactor.seconds() - worker.started >= self.stableAfter:
            self._failures[worker.index] = 0
        delay = self._scheduleRestart(worker.index)
        self.log.warn(
            "tftp worker {worker} (pid {pid}) ended: {reason}; restarting in {delay:.1f} s",
            worker=worker.index,
            pid=worker.pid,
            reason=reason.getErrorMessage(),
            delay=delay,
            tftpWorkerEnded=True,
            tftpWorkerPid=worker.pid,  # metrics: its running transfers are over
        )

    def _scheduleRestart(self, index: int) -> float:
        failures = self._failures.get(index, 0)
        self._failures[index] = failures + 1
        delay = min(self.maxBackoff, self.minBackoff * 2**failures)
        self._restarts[index] = self._reactor.callLater(delay, self._spawn, index)
        return float(delay)

    def relayEvent(self, worker: WorkerProtocol, line: bytes) -> None:
        """
        Re-emit one of C{worker}'s JSON log events here, marked with its id and pid.

        The fields C{tftpWorker} and C{tftpWorkerPid} are added for structured observers, and
        the text says it too: C{worker 1 (pid 1234): RRQ ...}.
        """
        try:
            event = eventFromJSON(line.decode("utf-8"))
            if not isinstance(event, dict):
                raise ValueError("not an event")
        except ValueError:
            self.relayText(worker, line)
            return
        event["tftpWorker"] = worker.index
        event["tftpWorkerPid"] = worker.pid
        prefix = f"worker {worker.index} (pid {worker.pid}): "
        if isinstance(event.get(TEXT_FIELD), str):
            event.pop("log_flattened", None)
            event["log_format"] = prefix + "{" + TEXT_FIELD + "}"
        elif isinstance(event.get("log_format"), str):
            event["log_format"] = prefix + event["log_format"]
        self._observer(event)

    def relayText(self, worker: WorkerProtocol, line: bytes) -> None:
        """Log a line that is not an event (the worker's stderr, a traceback) as a warning."""
        self.log.warn(
            "tftp worker {worker} (pid {pid}): {line}",
            worker=worker.index,
            pid=worker.pid,
            line=line.decode("utf-8", errors="replace").rstrip(),
        )

    def stop(self) -> Deferred[None]:
        """
        Stop every worker: close their pipe, send TERM, KILL those left after
        C{stopTimeout}. Fires when all have ended; none is restarted after this.
        """
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waits = []
        for worker in list(self.workers.values()):
            waits.append(worker.ended)
            try:
                worker.process.closeStdin()
                worker.process.signalProcess("TERM")
            except (ProcessExitedAlready, OSError):
                pass  # it is ending anyway; processEnded fires all the same
        if not waits:
            return maybeDeferred(lambda: None)
        killer = self._reactor.callLater(self.stopTimeout, self._kill)
        done = DeferredList(waits)

        def stopped(_: object) -> None:
            if killer.active():
                killer.cancel()

        return done.addCallback(stopped)

    def _kill(self) -> None:
        for worker in list(self.workers.values()):
            self.log.warn(
                "tftp worker {worker} (pid {pid}) did not stop; killing it",
                worker=worker.index,
                pid=worker.pid,
            )
            try:
                worker.process.signalProcess("KILL")
            except (ProcessExitedAlready, OSError):
                pass


class MultiProcessTFTPService(Service):
    """
    C{twistd -n udpsuite tftp --workers N}: a L{TFTPService} in this process plus N-1 worker
    processes (C{python -m twisted_udpsuite.tftp.workerprocess}) serving the same socket,
    with the same options; see the module docstring for how the limits are split.

    The port is bound as L{TFTPService} binds it (in L{privilegedStartService} under twistd,
    so the workers, started in L{startService}, run without the privileges); starting raises
    L{twisted.internet.error.CannotListenError} if it cannot be bound, before any worker is
    started.

    @param argv: The TFTP options for the workers, as C{twistd -n udpsuite tftp} takes them
        (L{twisted_udpsuite.tftp.tap.Options.toArgv}); they build their own policy and
        backend from them, as this process built C{policy} and C{backend}.
    @param policy: The policy of the whole server; this process runs its share
        (L{processPolicy}).
    @param backend: What this process serves.
    @param processes: N, the processes serving the port (this one included).
    @param drain: Seconds each worker lets its transfers finish on SIGTERM.
    @param python: The interpreter that runs the workers (this one by default).
    """

    log = Logger(namespace="twisted_udpsuite.tftp.workers")

    def __init__(
        self,
        argv: list[str],
        policy: ServerPolicy,
        backend: IBackend,
        *,
        processes: int,
        port: int = ports.TFTP,
        interface: str = "",
        tracer: IWireTracer | None = None,
        drain: float = DEFAULT_DRAIN,
        reactor: IReactorProcessNetwork | None = None,
        python: str = sys.executable,
        observer: ILogObserver | None = None,
    ) -> None:
        self._reactor = reactorOr(reactor)
        self.processes = processes
        self.server = TFTPService(
            backend,
            processPolicy(policy, processes, 0),
            port=port,
            interface=interface,
            reactor=self._reactor,
            tracer=tracer,
        )
        workerArgv = [*argv, "--drain", str(drain)]
        self.pool = WorkerPool(
            lambda index: [
                python,
                "-m",
                WORKER_MODULE,
                "--fd",
                str(SOCKET_FD),
                "--index",
                str(index),
                *workerArgv,
            ],
            processes - 1,
            reactor=self._reactor,
            observer=observer,
            stopTimeout=drain + 5.0,  # TERM to KILL outlasts the workers' drain
        )

    @property
    def listeners(self) -> list[Listener]:
        """The request port's listener (the one the workers share)."""
        return self.server.listeners

    @property
    def bound(self) -> bool:
        """Whether the request port is bound."""
        return self.server.bound

    def privilegedStartService(self) -> None:
        super().privilegedStartService()  # type: ignore[no-untyped-call]  # (unannotated)
        self.server.privilegedStartService()

    def drain(self, timeout: float) -> Deferred[Any]:
        """
        Stop without cutting transfers: this process drains its own, and the workers,
        sent SIGTERM now, drain theirs (for C{--drain}) and exit.
        """
        return DeferredList([self.server.drain(timeout), self.pool.stop()])

    def startService(self) -> None:
        self.server.startService()  # binds, unless privilegedStartService did
        port = self.server.listeningPort
        # One request per reactor turn in every process (see the module docstring).
        port.maxThroughput = 1
        super().startService()  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
        self.pool.start(port.fileno())
        self.log.info(
            "tftp serving in {processes} processes (this one and {workers} workers)",
            processes=self.processes,
            workers=self.pool.count,
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()  # type: ignore[no-untyped-call]  # (unannotated in Twisted)
        return DeferredList([self.pool.stop(), maybeDeferred(self.server.stopService)])
