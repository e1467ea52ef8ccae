"""
C{udpsuite COMMAND ...}: the suite's client side (also C{python -m
twisted_udpsuite}).  A protocol joins by adding its L{CommandSpec} to
L{COMMANDS}.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python import usage

from twisted_udpsuite import sendcli
from twisted_udpsuite.chat import cli as chat
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
from twisted_udpsuite.discovery import cli as discovery
from twisted_udpsuite.echo import cli as echo
from twisted_udpsuite.files import cli as files
from twisted_udpsuite.ipmsg import cli as ipmsg
from twisted_udpsuite.reactors import IReactorNetwork, reactorOr
from twisted_udpsuite.tftp import cli as tftp

__all__ = ["COMMANDS", "Interrupts", "Options", "main", "run"]

COMMANDS: list[CommandSpec] = [
    echo.COMMAND,
    sendcli.COMMAND,
    tftp.COMMAND,
    files.FETCH,
    files.LS,
    chat.COMMAND,
    discovery.COMMAND,
    ipmsg.COMMAND,
]


class Options(SuiteOptions):
    synopsis = "COMMAND ..."
    longdesc = (
        "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl-C), "
        "141 standard output closed early (e.g. by `| head`)."
    )
    subCommands = [(spec.name, None, spec.options, spec.description) for spec in COMMANDS]

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
    spec = next(c for c in COMMANDS if c.name == options.subCommand)
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
    """The C{udpsuite} console script."""
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
