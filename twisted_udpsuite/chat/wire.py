"""
The chat room's text protocol: one command or reply per datagram, pure (no
Twisted), readable and typeable by a human with C{nc -u}.

Members send commands (L{parseCommand} → a L{Command}); the room answers
(each datagram one line ending in a newline, so C{nc} shows it as a line)
with sequenced lines (L{Relay}: a message or a room event such as a join)
and unsequenced replies (L{Reply}: C{OK ...} or C{ERR ...}), read back with
L{parseReply}.  Anything that is not valid is one L{MalformedMessage}.
See C{PROTOCOL.md} beside this module for the whole protocol with examples.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = [
    "COMMANDS",
    "Command",
    "MalformedMessage",
    "Relay",
    "Reply",
    "formatTime",
    "isValidNick",
    "parseCommand",
    "parseReply",
]

#: Verbs a member may send; anything else is the text of a message.
COMMANDS = frozenset({"JOIN", "MSG", "NICK", "WHO", "LEAVE", "PING", "RESEND"})

#: Longest nick, in characters.
MAX_NICK = 24

_NICK = re.compile(r"^\w[\w.\-]*$")
_RELAY = re.compile(
    r"^#([0-9]{1,18}) ([0-9]{2}:[0-9]{2}:[0-9]{2}) (?:<([^>\s]+)> (.*)|\* (.*))$", re.S
)


class MalformedMessage(ValueError):
    """A datagram that is not a valid command or reply (the message says why)."""


def isValidNick(nick: str) -> bool:
    """Letters, digits, C{_ . -}; starts with a letter, digit or C{_}; 1 to 24 characters."""
    return 0 < len(nick) <= MAX_NICK and _NICK.match(nick) is not None


def formatTime(seconds: float) -> str:
    """C{HH:MM:SS} in UTC: the stamp on every relayed line."""
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedMessage(f"not UTF-8 (byte {e.start})") from None
    # nc and socat send the line's newline (and Windows tools a CR) too.
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def _seq(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 18:
        raise MalformedMessage(f"{text!r} is not a sequence number")
    return int(text)


@dataclass(frozen=True)
class Command:
    """
    One member command.

    @ivar verb: one of L{COMMANDS}.
    @ivar text: the message (C{MSG}) or the nick (C{JOIN}, C{NICK}), else C{""}.
    @ivar first: C{RESEND}: the first sequence number wanted.
    @ivar last: C{RESEND}: the last one wanted (C{None}: up to the newest).
    """

    verb: str
    text: str = ""
    first: int = 0
    last: int | None = None

    def toBytes(self) -> bytes:
        if self.verb == "RESEND":
            tail = f" {self.last}" if self.last is not None else ""
            return f"RESEND {self.first}{tail}".encode()
        if self.verb in ("JOIN", "NICK", "MSG"):
            return f"{self.verb} {self.text}".encode()
        return self.verb.encode()


def parseCommand(data: bytes) -> Command:
    """
    Parse what a member sent.  A datagram whose first word is not an
    upper-case verb is a message (C{hello all} is C{MSG hello all}).

    @raise MalformedMessage: not UTF-8, empty, a bad nick or bad arguments.
    """
    text = _decode(data)
    if not text.strip():
        raise MalformedMessage("empty message")
    verb, _, rest = text.partition(" ")
    if verb not in COMMANDS:
        return Command("MSG", text)
    if verb == "MSG":
        if not rest.strip():
            raise MalformedMessage("MSG needs some text")
        return Command("MSG", rest)
    if verb in ("JOIN", "NICK"):
        nick = rest.strip()
        if not isValidNick(nick):
            raise MalformedMessage(
                f"{verb} needs a nick: 1-{MAX_NICK} letters, digits, '_', '.', '-'"
            )
        return Command(verb, nick)
    if verb == "RESEND":
        parts = rest.split()
        if not 1 <= len(parts) <= 2:
            raise MalformedMessage("RESEND needs FIRST [LAST]")
        first = _seq(parts[0])
        last = _seq(parts[1]) if len(parts) == 2 else None
        if last is not None and last < first:
            raise MalformedMessage("RESEND: LAST is before FIRST")
        return Command("RESEND", first=first, last=last)
    if rest.strip():
        raise MalformedMessage(f"{verb} takes no arguments")
    return Command(verb)


@dataclass(frozen=True)
class Relay:
    """
    A sequenced line from the room: a member's message or a room event.

    @ivar seq: the room's sequence number (gaps mean lost datagrams).
    @ivar time: C{HH:MM:SS} (UTC) when the room relayed it.
    @ivar nick: the sender, or C{None} for a room event (C{* alice joined}).
    @ivar text: the message or the event's text.
    """

    seq: int
    time: str
    nick: str | None
    text: str

    def toBytes(self) -> bytes:
        who = f"<{self.nick}> " if self.nick is not None else "* "
        return f"#{self.seq} {self.time} {who}{self.text}\n".encode()


@dataclass(frozen=True)
class Reply:
    """
    An unsequenced answer: C{OK WHAT ARGS...} or C{ERR CODE [text]}.

    @ivar ok: C{OK} (true) or C{ERR} (false).
    @ivar what: C{JOINED}, C{SENT}, C{NICK}, C{PONG}, C{WHO}, C{LEFT} for
        C{OK}; the error code for C{ERR} (C{""} when cut short).
    @ivar args: the words that follow C{what} (for C{ERR}, the free text as
        one string).
    """

    ok: bool
    what: str
    args: tuple[str, ...] = ()

    def toBytes(self) -> bytes:
        words = ["OK" if self.ok else "ERR", self.what, *self.args]
        return (" ".join(w for w in words if w) + "\n").encode()

    def number(self, index: int) -> int:
        """Argument C{index} as a sequence number."""
        try:
            return _seq(self.args[index])
        except IndexError:
            raise MalformedMessage(f"OK {self.what}: missing argument {index + 1}") from None


def parseReply(data: bytes) -> Relay | Reply:
    """
    Parse what the room sent.

    @raise MalformedMessage: anything but a relayed line or an OK/ERR reply.
    """
    text = _decode(data)
    if text.startswith("#"):
        match = _RELAY.match(text)
        if match is None:
            raise MalformedMessage("bad relayed line")
        seq, stamp, nick, said, event = match.groups()
        if nick is not None:
            return Relay(int(seq), stamp, nick, said)
        return Relay(int(seq), stamp, None, event)
    head, _, rest = text.partition(" ")
    if head == "OK":
        words = rest.split()
        if not words:
            raise MalformedMessage("OK without what")
        return Reply(True, words[0], tuple(words[1:]))
    if head == "ERR":
        code, _, message = rest.partition(" ")
        return Reply(False, code, (message,) if message else ())
    raise MalformedMessage("neither a relayed line nor an OK/ERR reply")
