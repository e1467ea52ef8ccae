"""
C{udpsuite COMMAND ...}: the suite's client side (also C{python -m
twisted_udpsuite}).  A protocol joins by adding its L{CommandSpec} to
L{COMMANDS}.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python import usage

from twisted_udpsuite import __version__, sendcli
from twisted_udpsuite.chat import cli as chat
from twisted_udpsuite.command import CommandError, CommandSpec, Console
from twisted_udpsuite.discovery import cli as discovery
from twisted_udpsuite.echo import cli as echo
from twisted_udpsuite.files import cli as files
from twisted_udpsuite.tftp import cli as tftp

__all__ = ["COMMANDS", "Options", "main", "run"]

COMMANDS: list[CommandSpec] = [
    echo.COMMAND,
    sendcli.COMMAND,
    tftp.COMMAND,
    files.FETCH,
    files.LS,
    chat.COMMAND,
    discovery.COMMAND,
]

_PROGRAM = "udpsuite"


class Options(usage.Options):
    synopsis = "COMMAND [OPTIONS] ..."
    subCommands = [(spec.name, None, spec.options, spec.description) for spec in COMMANDS]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"udpsuite {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("no command given")


async def main(reactor: Any, argv: list[str], console: Console | None = None) -> int:
    """
    Run one command and return its exit status: 0 success, 1 failure, 2
    usage error.  Failures are one line on stderr.
    """
    console = console if console is not None else Console.standard()
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        console.warn(f"{_PROGRAM}: error: {e} (see: {_PROGRAM} --help)")
        return 2
    spec = next(c for c in COMMANDS if c.name == options.subCommand)
    try:
        return await spec.run(reactor, options.subOptions, console)
    except CommandError as e:
        console.warn(f"{_PROGRAM} {spec.name}: {e}")
        return e.status


def _react(reactor: Any, argv: list[str]) -> Deferred[None]:
    async def go() -> None:
        status = await main(reactor, argv)
        if status:
            raise SystemExit(status)

    return Deferred.fromCoroutine(go())


def run() -> None:
    """The C{udpsuite} console script."""
    task.react(_react, (sys.argv[1:],))
