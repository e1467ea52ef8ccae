"""
C{udpsuite COMMAND ...}: the suite's client side (also C{python -m
twisted_udpsuite}).  A protocol joins with an entry in L{COMMANDS}, which names the
command and says where its L{CommandSpec} lives: only the chosen command's module is
imported, so that a command starts as fast as it can (C{udpsuite tftp get} does not load
the chat, files or IPMsg code).
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python import usage

from twisted_udpsuite.command import (
    INTERRUPTED,
    OUTPUT_CLOSED,
    PROGRAM,
    CommandError,
    CommandSpec,
    Console,
    SuiteOptions,
    commandWords,
)
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.twistedprivate import withoutTLS

__all__ = ["COMMANDS", "CommandEntry", "Interrupts", "Options", "main", "run"]


@dataclass(frozen=True)
class CommandEntry:
    """
    One C{udpsuite} command in L{COMMANDS}: its name and the line C{udpsuite --help}
    shows for it, and where its L{CommandSpec} is (C{attribute} of C{module}), imported
    only when the command is chosen.
    """

    name: str
    description: str
    module: str
    attribute: str = "COMMAND"

    def load(self) -> CommandSpec:
        """The command's L{CommandSpec}, importing its module (once)."""
        spec: CommandSpec = getattr(importlib.import_module(self.module), self.attribute)
        return spec

    def options(self) -> usage.Options:
        """A new parser of the command's options (the parser factory of a subcommand)."""
        return self.load().options()


COMMANDS: list[CommandEntry] = [
    CommandEntry("echo", "Ping a UDP echo server: loss and latency", "twisted_udpsuite.echo.cli"),
    CommandEntry("send", "Send one datagram; --wait S prints replies", "twisted_udpsuite.sendcli"),
    CommandEntry("tftp", "TFTP client: get and put files", "twisted_udpsuite.tftp.cli"),
    CommandEntry(
        "fetch",
        "Download a file from a udpsuite file server",
        "twisted_udpsuite.files.cli",
        "FETCH",
    ),
    CommandEntry(
        "ls", "List a directory of a udpsuite file server", "twisted_udpsuite.files.cli", "LS"
    ),
    CommandEntry("chat", "Full-duplex terminal chat (peer or room)", "twisted_udpsuite.chat.cli"),
    CommandEntry(
        "discover", "Find udpsuite responders on the LAN", "twisted_udpsuite.discovery.cli"
    ),
    CommandEntry(
        "ipmsg", "Terminal member of an IP Messenger/FeiQ/iptux LAN", "twisted_udpsuite.ipmsg.cli"
    ),
]


class Options(SuiteOptions):
    synopsis = "COMMAND ..."
    longdesc = (
        "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl-C), "
        "141 standard output closed early (e.g. by `| head`)."
    )
    subCommands = [(c.name, None, c.options, c.description) for c in COMMANDS]

    def getSynopsis(self) -> str:
        return f"Usage: {PROGRAM} [--version] {self.synopsis}"

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("no command given")


class Interrupts:
    """
    Delivers Ctrl-C to the running command: L{run} calls L{interrupt} from its
    SIGINT handler, tests call it directly; L{main} decides what it does.
    """

    def __init__(self) -> None:
        self.handler: Callable[[], None] | None = None
        self.received = False

    def interrupt(self) -> None:
        self.received = True
        if self.handler is not None:
            self.handler()


async def main(
    reactor: IReactorNetwork | None,
    argv: list[str],
    console: Console | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """
    Run one command and return its exit status: 0 success, 1 failure, 2
    usage error, 130 interrupted, 141 standard output closed.  Failures are
    one line on stderr.

    An interrupt, or standard output closing, cancels the command's Deferred:
    each command cleans up as its client does on cancel (a TFTP transfer
    sends the server an ERROR), and may say what it left behind by raising a
    L{CommandError} as it ends.

    @param reactor: where the command runs (the global reactor if C{None}).
    """
    reactor = reactorOr(reactor)
    console = console if console is not None else Console.standard()
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(argv)  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        console.warn(f"{PROGRAM}: error: {e} (see: {commandWords(options)} --help)")
        return 2
    except BrokenPipeError:  # --help or --version into a closed pipe
        console.outputWasClosed()
        return OUTPUT_CLOSED
    spec = next(c for c in COMMANDS if c.name == options.subCommand).load()
    running: Deferred[int] = ensureDeferred(spec.run(reactor, options.subOptions, console))
    stopped: list[int] = []
    pending: list[Any] = []

    def stop(status: int) -> None:
        if not stopped:
            stopped.append(status)
            # Not from inside the command's own code (a closed output is seen in its say()).
            pending.append(reactor.callLater(0, running.cancel))

    console.onOutputClosed = lambda: stop(OUTPUT_CLOSED)
    if interrupts is not None:
        interrupts.handler = lambda: stop(INTERRUPTED)
        if interrupts.received:
            stop(INTERRUPTED)
    try:
        status = await running
        message = None
    except CancelledError:
        status, message = 1, "interrupted"
    except CommandError as e:
        status, message = e.status, str(e)
    finally:
        console.onOutputClosed = None
        if interrupts is not None:
            interrupts.handler = None
        for call in pending:
            if call.active():
                call.cancel()
    console.flush()
    if console.outputClosed:
        return OUTPUT_CLOSED
    if stopped and message is not None:
        status = stopped[0]
    if message is not None:
        console.warn(f"{PROGRAM} {spec.name}: {message}")
    return status


def _react(reactor: IReactorNetwork, argv: list[str]) -> Deferred[None]:
    interrupts = Interrupts()

    def onSignal(number: int, frame: FrameType | None) -> None:
        # A second Ctrl-C is not caught: it ends the process at once, as the shell expects.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        reactor.callFromThread(interrupts.interrupt)

    signal.signal(signal.SIGINT, onSignal)

    async def go() -> None:
        status = await main(reactor, argv, interrupts=interrupts)
        if status:
            raise SystemExit(status)

    return Deferred.fromCoroutine(go())


def run() -> None:
    """The C{udpsuite} console script (and C{python -m twisted_udpsuite})."""
    withoutTLS()  # before the reactor is imported: no command speaks TLS
    try:
        task.react(_react, (sys.argv[1:],))
    except SystemExit as e:
        # What is still buffered goes out now, so that a closed pipe is an exit status,
        # not "Exception ignored ... BrokenPipeError" from Python's flush at exit.
        console = Console.standard()
        console.flush()
        if console.outputClosed and not e.code:
            raise SystemExit(OUTPUT_CLOSED) from None
        raise
