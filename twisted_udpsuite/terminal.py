"""
The suite's interactive terminals: showing network text safely, and a
line-editing command terminal the chat and IPMsg terminals share.

A peer's text may carry escape sequences that move the cursor, clear the
screen, retitle the window or worse.  L{printable} decodes and neutralises
them so that what reaches the terminal is only visible text.

L{LineTerminal} is a L{LineReceiver} for L{twisted.internet.stdio.StandardIO},
so typing and receiving share one thread and one reactor.  Lines starting
with C{/} are commands; anything else is said (L{LineTerminal.say}).
Incoming text is written above the line being typed: on a terminal the
current line is erased (C{\r ESC[K}), the text printed, and the prompt
redrawn; elsewhere (a pipe, a test) they are plain lines.  With
C{lineEditing} (the terminal put in cbreak mode, L{cbreakMode}) the
terminal echoes keys itself, so the partly typed line is redrawn too.
"""

from __future__ import annotations

import codecs
import os
import sys
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorCore
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_udpsuite.reactors import IReactorNetwork

if TYPE_CHECKING:
    from twisted.internet.stdio import StandardIO

__all__ = ["LineTerminal", "cbreakMode", "connectStdio", "printable"]

_C0_SHOWN = {"\t": "\t"}


def printable(data: bytes, encoding: str = "utf-8") -> str:
    """
    C{data} decoded with C{encoding} and made safe to print.

    Undecodable bytes become C{\\xNN}; control characters (C0, DEL, C1 —
    including ESC and CSI, which start every terminal escape sequence — and
    bidirectional overrides) become visible escapes such as C{\\x1b} or
    C{\\u202e}.  Tabs are kept; newlines are shown as C{\\n} so that one
    message is one line.
    """
    text = data.decode(encoding, errors="backslashreplace")
    out = []
    for ch in text:
        if ch in _C0_SHOWN:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") and ch != "\u200d":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


@implementer(IHalfCloseableProtocol)
class LineTerminal(LineReceiver):
    """
    A command line with incoming text above it; subclasses fill L{commands}
    (name -> function of the argument words) and define L{say} and L{leave}.

    @param isTerminal: whether the output is a TTY (redraw the prompt).
    @param encoding: of the user's typing and of the output.
    @param lineEditing: the terminal is in cbreak mode: we echo and edit.
    @ivar done: fires once the user quits (C{/quit}, Ctrl-D, stdin closed) or the
        output is closed.
    @ivar outputLost: whether it ended because its output was closed (C{| head}).
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536
    prompt = "> "

    def __init__(
        self, isTerminal: bool = False, encoding: str = "utf-8", lineEditing: bool = False
    ) -> None:
        self.isTerminal = isTerminal
        self.encoding = encoding
        self.lineEditing = lineEditing
        self.typed = ""
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._escape = ""
        self.done: Deferred[None] = Deferred()
        self.outputLost = False
        self.commands: dict[str, Callable[[list[str]], None]] = {"quit": lambda args: self._quit()}

    def say(self, text: str) -> None:
        """A line that is not a command."""
        raise NotImplementedError

    def leave(self) -> None:
        """The user is leaving: say goodbye to the network."""

    # Output

    def _write(self, text: str) -> None:
        if self.transport is None:
            return
        data = text.encode(self.encoding, "replace")
        if self.isTerminal:
            current = (self.prompt + self.typed).encode(self.encoding, "replace")
            data = b"\r\x1b[K" + data + b"\n" + current
        else:
            data += b"\n"
        self.transport.write(data)

    def _lines(self, text: str) -> None:
        for line in text.splitlines():
            self._write(line)

    def showNotice(self, text: str) -> None:
        self._write(f"-- {text}")

    # Input

    def connectionMade(self) -> None:
        self.showNotice("type /help for commands, /quit to leave")

    def dataReceived(self, data: bytes) -> None:
        if not self.lineEditing:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
            return
        for ch in self._decoder.decode(data):
            self._key(ch)

    def _key(self, ch: str) -> None:
        """
        One key in line-editing mode (the terminal in cbreak mode, no echo):
        we echo, so that we always know the partly typed line and can redraw
        it under incoming messages.
        """
        if self._escape:  # skip an escape sequence (arrow keys, ...)
            self._escape += ch
            if len(self._escape) > 1 and (ch.isalpha() or ch == "~") or len(self._escape) > 8:
                self._escape = ""
            return
        if ch in "\r\n":
            line, self.typed = self.typed, ""
            self._echo(b"\n")
            self.lineReceived(line.encode(self.encoding, "replace"))
        elif ch in "\x7f\b":
            self.typed = self.typed[:-1]
            self._redraw()
        elif ch == "\x15":  # Ctrl-U
            self.typed = ""
            self._redraw()
        elif ch == "\x17":  # Ctrl-W: the last word
            words = self.typed.rstrip()
            self.typed = words[: words.rfind(" ") + 1]
            self._redraw()
        elif ch == "\x04":  # Ctrl-D
            if not self.typed:
                self._echo(b"\n")
                self._quit()
        elif ch == "\x1b":
            self._escape = ch
        elif ch.isprintable() or ch == "\t":
            if len(self.typed.encode(self.encoding, "replace")) >= self.MAX_LENGTH:
                return
            self.typed += ch
            self._echo(ch.encode(self.encoding, "replace"))

    def _echo(self, data: bytes) -> None:
        """Write what line editing draws (keys arrive only through a transport)."""
        assert self.transport is not None
        self.transport.write(data)

    def _redraw(self) -> None:
        line = self.prompt + self.typed
        self._echo(b"\r\x1b[K" + line.encode(self.encoding, "replace"))

    def lineReceived(self, line: bytes) -> None:
        text = line.decode(self.encoding, "replace").rstrip("\r")
        try:
            if text.startswith("/") and not text.startswith("//"):
                name, *args = text[1:].split() or [""]
                command = self.commands.get(name.lower()) if name else None
                if command is None:
                    self.showNotice(f"unknown command /{name}: try /help")
                else:
                    command(args)
            elif text:
                self.say(text[1:] if text.startswith("//") else text)
        except Exception as e:  # a bad line must never end the session
            self.showNotice(f"error: {e}")
        if self.isTerminal and self.transport is not None and not self.done.called:
            self._redraw()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.showNotice(f"line too long (at most {self.MAX_LENGTH} bytes); not sent")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._finish()

    def readConnectionLost(self) -> None:
        """Standard input ended (Ctrl-D on a terminal): quit."""
        self._quit()

    def writeConnectionLost(self) -> None:
        """Standard output was closed (its reader went away): nothing more can be shown."""
        self.outputLost = True
        self._quit()

    def _quit(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()
        self._finish()

    def _finish(self) -> None:
        if not self.done.called:
            self.leave()
            self.done.callback(None)


def cbreakMode(reactor: IReactorCore) -> Callable[[], None] | None:
    """
    Put a terminal stdin in cbreak mode (keys arrive one by one, no echo;
    Ctrl-C still interrupts) so a L{LineTerminal} can redraw the partly typed
    line.  Returns the function that restores it (also run at reactor
    shutdown), or C{None} when stdin is not a terminal.
    """
    import termios
    import tty

    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd):
            return None
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    except (OSError, ValueError, termios.error):
        return None

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except (OSError, termios.error):
            pass

    reactor.addSystemEventTrigger("after", "shutdown", restore)
    return restore


def connectStdio(protocol: LineTerminal, reactor: IReactorNetwork) -> StandardIO:
    """Attach a terminal protocol to stdin/stdout (tests replace this)."""
    from twisted.internet.stdio import StandardIO

    stdio: StandardIO = StandardIO(protocol, reactor=reactor)  # type: ignore[no-untyped-call]
    return stdio
