"""
What every C{udpsuite} client command shares: the L{CommandSpec} through
which a protocol adds a command, and L{Console}, where commands write.

Exit statuses: 0 success, 1 failure, 2 usage error, L{INTERRUPTED} (130) after
Ctrl-C, L{OUTPUT_CLOSED} (141) when standard output was closed early (C{cmd |
head}): the statuses a shell shows for a death by SIGINT or SIGPIPE.
"""

from __future__ import annotations

import errno
import getopt
import ipaddress
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.python import usage

from twisted_udpsuite import __version__
from twisted_udpsuite.addresses import parseHostPort
from twisted_udpsuite.progress import ProgressBar

#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports a death by SIGINT).
INTERRUPTED = 130
#: The exit status when standard output was closed early (128 + SIGPIPE).
OUTPUT_CLOSED = 141
PROGRAM = "udpsuite"


class CommandError(Exception):
    """A failure to report to the user as one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _isClosedPipe(error: OSError) -> bool:
    return error.errno in (errno.EPIPE, errno.ECONNRESET)


@dataclass
class Console:
    """
    The command's standard output and error (replaced by tests).

    When the reader of standard output goes away (C{| head}), writing stops
    quietly: L{outputClosed} becomes true, the output is pointed at
    C{/dev/null} (so that Python's own flush at exit cannot fail, as the
    Python documentation advises for SIGPIPE), and L{onOutputClosed} is called
    once, so the command can be stopped.

    @ivar binary: where binary results go (a download to C{-}); by default the
        process's standard output.
    """

    out: TextIO
    err: TextIO
    binary: BinaryIO | None = None
    onOutputClosed: Callable[[], None] | None = field(default=None, repr=False)
    outputClosed: bool = False

    @classmethod
    def standard(cls) -> Console:
        return cls(sys.stdout, sys.stderr, sys.stdout.buffer)

    def say(self, text: str) -> None:
        if self.outputClosed:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except OSError as e:
            if not _isClosedPipe(e):
                raise
            self.outputWasClosed()

    def warn(self, text: str) -> None:
        try:
            self.err.write(text + "\n")
            self.err.flush()
        except OSError as e:
            if not _isClosedPipe(e):
                raise

    def writeBytes(self, data: bytes) -> None:
        """Write binary results to standard output (dropped once it is closed)."""
        if self.outputClosed:
            return
        try:
            self._binaryOut().write(data)
        except OSError as e:
            if not _isClosedPipe(e):
                raise
            self.outputWasClosed()

    def binaryOutput(self) -> _BinaryOutput:
        """A file-like C{write(bytes)} onto L{writeBytes}, for a download to C{-}."""
        return _BinaryOutput(self)

    def flush(self) -> None:
        """Push out what is buffered; a closed output is noted, not raised."""
        if self.outputClosed:
            return
        try:
            if self.binary is not None:
                self.binary.flush()
            self.out.flush()
        except OSError as e:
            if not _isClosedPipe(e):
                raise
            self.outputWasClosed()

    def _binaryOut(self) -> BinaryIO:
        return self.binary if self.binary is not None else sys.stdout.buffer

    def outputWasClosed(self) -> None:
        """Standard output is gone (seen here, or by a command's own writer)."""
        if self.outputClosed:
            return
        self.outputClosed = True
        for stream in (self.out, self.binary):
            try:
                fd = stream.fileno() if stream is not None else -1
            except (OSError, ValueError, AttributeError):
                continue
            if fd >= 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
        if self.onOutputClosed is not None:
            self.onOutputClosed()

    @property
    def isTerminal(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    def progressBar(self, clock: Callable[[], float], label: str) -> ProgressBar | None:
        """
        A progress bar for a transfer, or None: drawn on stderr, like curl's and wget's, so
        stdout carries only results; only when both outputs are terminals.
        """
        if self.isTerminal and getattr(self.err, "isatty", lambda: False)():
            return ProgressBar(self.err, clock, label)
        return None


@dataclass(frozen=True)
class _BinaryOutput:
    console: Console

    def write(self, data: bytes) -> None:
        self.console.writeBytes(data)


@dataclass(frozen=True)
class CommandSpec:
    """
    One C{udpsuite} command, as its protocol's C{cli} module declares it.  Its name and
    one-line description are also in L{twisted_udpsuite.cli.COMMANDS}, which says where
    the spec lives, so that C{udpsuite --help} lists every command without importing it.

    @ivar run: C{run(reactor, options, console)} → coroutine or Deferred
        of the exit status.
    """

    name: str
    options: type[usage.Options]
    run: Callable[[Any, Any, Console], Coroutine[Any, Any, int] | Deferred[int]]


def commandWords(options: usage.Options) -> str:
    """
    The words that name the deepest command C{options} (the top level) reached while
    parsing (C{udpsuite tftp get}), for pointing at its own C{--help}.
    """
    words = [PROGRAM]
    node: Any = options
    while getattr(node, "subCommand", None) is not None:
        words.append(node.subCommand)
        node = getattr(node, "subOptions", None)
    return " ".join(words)


class SuiteOptions(usage.Options):
    """
    The options of every C{udpsuite} command and subcommand: a usage line that names
    the command (C{Usage: udpsuite tftp get [options] HOST[:PORT] REMOTE [LOCAL]}),
    and C{--version} for the suite's version, not Twisted's.
    """

    synopsis = ""

    def opt_version(self) -> None:
        """Print the version of udpsuite and exit."""
        sys.stdout.write(f"{PROGRAM} {__version__}\n")
        raise SystemExit(0)

    def getSynopsis(self) -> str:
        chain = []
        node: Any = self
        while getattr(node, "parent", None) is not None:
            chain.append(node.parent.subCommand)
            node = node.parent
        return " ".join(["Usage:", PROGRAM, *reversed(chain), "[options]", self.synopsis]).rstrip()


class CommandOptions(SuiteOptions):
    """
    Options of one leaf command, accepted in any order with the arguments
    (C{udpsuite echo HOST -c 3}), as GNU tools do; C{usage.Options} alone
    stops at the first argument.
    """

    def parseOptions(self, options: list[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            pairs, arguments = getopt.gnu_getopt(options, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for name, value in pairs:
            if name.startswith("--"):
                ordered.append(f"{name}={value}" if name[2:] + "=" in self.longOpt else name)
            elif name[1:] + ":" in self.shortOpt:
                ordered.extend([name, value])
            else:
                ordered.append(name)
        super().parseOptions([*ordered, "--", *arguments])  # type: ignore[no-untyped-call]


def downloadPath(remote: str, local: str | None, name: str) -> str:
    """
    Where a download of C{remote} goes: C{local}; or, like C{cp}, C{name}
    (C{remote}'s last path segment) inside C{local} when that is a
    directory, or in the current directory when C{local} is not given.
    A C{local} ending in a separator names a directory, which must exist
    (it is not created, and never taken as a file name).

    @raise usage.UsageError: if C{name} cannot name a file, or C{local} ends
        in a separator and is not an existing directory.
    """
    if local is not None and local.endswith(("/", os.sep)) and not os.path.isdir(local):
        what = (
            "not a directory" if os.path.exists(local.rstrip("/" + os.sep)) else "no such directory"
        )
        raise usage.UsageError(f"LOCAL {local!r}: {what} (a trailing / names a directory)")
    if local is not None and not os.path.isdir(local):
        return local
    if name in ("", ".", ".."):
        raise usage.UsageError(f"cannot name a local file after {remote!r}: give LOCAL")
    return name if local is None else os.path.join(local, name)


def showAddress(host: str, port: int) -> str:
    """C{host:port}, with an IPv6 address in brackets (C{[::1]:69})."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def targetOption(text: str, defaultPort: int | None = None) -> tuple[str, int]:
    """Parse a C{HOST[:PORT]} argument, as a L{usage.UsageError} when it is bad."""
    try:
        return parseHostPort(text, defaultPort)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


async def resolveHost(reactor: IReactorCore, host: str) -> str:
    """The IP address of C{host} (a literal is returned as it is)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return await reactor.resolve(host)
    except CancelledError:
        raise
    except Exception as e:
        raise CommandError(f"cannot resolve {host!r}: {e}") from None


async def stopPort(port: Any) -> None:
    """Stop listening on C{port}; its C{stopListening} returns a Deferred only sometimes."""
    stopped = port.stopListening()
    if stopped is not None:
        await stopped
