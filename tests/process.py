"""
Running outside programs from reactor-driven tests, without blocking the reactor.

L{runProcess} runs a command to completion (with optional standard input);
L{BackgroundProcess} starts a long-running one (a server), waits for a line
that says it is ready, and stops it again.  Every wait has a timeout.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


def venvScript(name: str) -> str:
    """A console script installed beside the running Python (twistd, udpsuite)."""
    return str(Path(sys.executable).parent / name)


class _Collector(ProcessProtocol):
    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = bytearray()
        self.err = bytearray()
        self.done: Deferred[tuple[bytes, bytes, int]] = Deferred()
        self.watchers: list[tuple[re.Pattern[bytes], Deferred[re.Match[bytes]]]] = []

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for pattern, d in list(self.watchers):
            match = pattern.search(bytes(self.out) + bytes(self.err))
            if match:
                self.watchers.remove((pattern, d))
                d.callback(match)

    def processEnded(self, reason: Failure) -> None:
        code = 0
        if reason.check(ProcessTerminated):
            # A signal death is reported as minus the signal number, like subprocess.
            value = reason.value
            code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        elif not reason.check(ProcessDone):
            code = -1
        for _, d in self.watchers:
            d.errback(
                RuntimeError(
                    "process ended: " + (bytes(self.out) + bytes(self.err)).decode(errors="replace")
                )
            )
        self.watchers.clear()
        self.done.callback((bytes(self.out), bytes(self.err), code))


def _spawn(
    reactor: Any,
    argv: list[str],
    stdin: bytes | None,
    env: dict[str, str] | None,
    path: str | None,
    usePTY: bool = False,
) -> _Collector:
    proto = _Collector(stdin)  # type: ignore[arg-type]
    environment = dict(os.environ)
    environment.update(env or {})
    reactor.spawnProcess(proto, argv[0], argv, env=environment, path=path, usePTY=usePTY)
    return proto


async def runProcess(
    reactor: Any,
    argv: list[str],
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    path: str | None = None,
    timeout: float = 60,
) -> tuple[bytes, bytes, int]:
    """Run C{argv} to the end; return (stdout, stderr, exit status)."""
    proto = _spawn(reactor, argv, stdin, env, path)
    try:
        return await proto.done.addTimeout(timeout, reactor)
    except Exception:
        _kill(proto)
        raise


def _kill(proto: _Collector) -> None:
    try:
        proto.transport.signalProcess("KILL")
    except Exception:
        pass


class BackgroundProcess:
    """
    A long-running program (a server, or an interactive client) started for a test.

    @param usePTY: run it on a pseudo-terminal (stdout and stderr then arrive together,
        with the terminal's CRLF line endings) instead of pipes.
    """

    def __init__(
        self,
        reactor: Any,
        argv: list[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
        *,
        usePTY: bool = False,
    ) -> None:
        self._reactor = reactor
        self._proto = _spawn(reactor, argv, None, env, path, usePTY)

    @property
    def output(self) -> bytes:
        return bytes(self._proto.out) + bytes(self._proto.err)

    @property
    def pid(self) -> int:
        """The program's process id."""
        return int(self._proto.transport.pid)

    def write(self, data: bytes) -> None:
        """Type C{data} on the program's standard input (or terminal)."""
        self._proto.transport.write(data)

    def signal(self, name: str) -> None:
        """Send the signal C{name} ("KILL", "TERM", ...) to the program."""
        self._proto.transport.signalProcess(name)

    async def ended(self, timeout: float = 10) -> tuple[bytes, bytes, int]:
        """Wait for the program to exit by itself; return (stdout, stderr, exit status)."""
        return await self._proto.done.addTimeout(timeout, self._reactor)

    async def waitFor(self, pattern: bytes, timeout: float = 20) -> re.Match[bytes]:
        """Wait until the output matches C{pattern}; return the match."""
        d: Deferred[re.Match[bytes]] = Deferred()
        self._proto.watchers.append((re.compile(pattern), d))
        self._proto._check()
        return await d.addTimeout(timeout, self._reactor)

    async def stop(self, timeout: float = 10) -> tuple[bytes, bytes, int]:
        """SIGTERM, then wait for it to exit (SIGKILL after C{timeout})."""
        if not self._proto.done.called:
            try:
                self._proto.transport.signalProcess("TERM")
            except Exception:
                pass
        try:
            return await self._proto.done.addTimeout(timeout, self._reactor)
        except Exception:
            _kill(self._proto)
            raise
