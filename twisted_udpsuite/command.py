"""
What every C{udpsuite} client command shares: the L{CommandSpec} through
which a protocol adds a command, and L{Console}, where commands write.
"""

from __future__ import annotations

import getopt
import ipaddress
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.internet.defer import Deferred
from twisted.python import usage

from twisted_udpsuite.addresses import parseHostPort
from twisted_udpsuite.progress import ProgressBar


class CommandError(Exception):
    """A failure to report to the user as one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Console:
    """The command's standard output and error (replaced by tests)."""

    out: TextIO
    err: TextIO

    @classmethod
    def standard(cls) -> Console:
        return cls(sys.stdout, sys.stderr)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

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
class CommandSpec:
    """
    One C{udpsuite} command.

    @ivar run: C{run(reactor, options, console)} → coroutine or Deferred
        of the exit status.
    """

    name: str
    description: str
    options: type[usage.Options]
    run: Callable[[Any, Any, Console], Coroutine[Any, Any, int] | Deferred[int]]


class CommandOptions(usage.Options):
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
        super().parseOptions([*ordered, "--", *arguments])


def downloadPath(remote: str, local: str | None, name: str) -> str:
    """
    Where a download of C{remote} goes: C{local}; or, like C{cp}, C{name}
    (C{remote}'s last path segment) inside C{local} when that is a
    directory, or in the current directory when C{local} is not given.

    @raise usage.UsageError: if C{name} cannot name a file.
    """
    if local is not None and not os.path.isdir(local):
        return local
    if name in ("", ".", ".."):
        raise usage.UsageError(f"cannot name a local file after {remote!r}: give LOCAL")
    return name if local is None else os.path.join(local, name)


def targetOption(text: str, defaultPort: int | None = None) -> tuple[str, int]:
    """Parse a C{HOST[:PORT]} argument, as a L{usage.UsageError} when it is bad."""
    try:
        return parseHostPort(text, defaultPort)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None


async def resolveHost(reactor: Any, host: str) -> str:
    """The IP address of C{host} (a literal is returned as it is)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return await reactor.resolve(host)  # type: ignore[no-any-return]
    except Exception as e:
        raise CommandError(f"cannot resolve {host!r}: {e}") from None
