# -*- test-case-name: tests.test_activation -*-
"""
Sockets bound by someone else and handed to us: systemd's socket activation and inetd.

B{systemd} (and C{systemd-socket-activate}) start a service with its sockets already bound,
from descriptor 3 on, and say so in C{LISTEN_PID} (our pid), C{LISTEN_FDS} (how many) and
C{LISTEN_FDNAMES} (their C{FileDescriptorName=}s, colon-separated). L{fromEnvironment}
reads them, and L{assign} gives each socket to the L{Listener} it is for, which then adopts
it (C{adoptDatagramPort} with packet info, or C{adoptStreamPort}) instead of binding:

  1. B{By name}: a socket named like a listener (C{echo}, C{files}, C{files-http}, C{tftp},
     C{chatroom}, C{responder}) goes to that listener of the socket's type (echo has a UDP
     and a TCP one, so one C{FileDescriptorName=echo} serves both); C{NAME-udp} or
     C{NAME-tcp} also says the type.  A name no listener has (systemd's default, the unit's
     name, or none) falls through to:
  2. B{By type and port}: a UDP socket goes to the UDP listener configured (C{--port}) with
     the socket's port number, a TCP socket to such a TCP listener.

Where a socket is adopted the listener's C{--port} and C{--interface} are not used: the
socket's own address is.  Listeners no socket matched bind as usual.  A socket that matches
no listener, or a second one for the same listener, is a start-up error (a misnamed socket
would otherwise be held open and never answered).

B{inetd} (C{wait} mode, for UDP) starts the server when a datagram arrives on the socket,
which it hands over as descriptor 0, and usually as 1 and 2 too; the server reads requests
until it has been idle for a while, then exits, and inetd watches the socket again.  See
L{inetdSocket}.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted_udpsuite.service import Listener

__all__ = [
    "ActivationError",
    "InheritedSocket",
    "assign",
    "describe",
    "fromEnvironment",
    "inetdSocket",
]

FIRST_FD = 3
"""systemd's first passed descriptor (C{SD_LISTEN_FDS_START})."""

_TRANSPORTS = {socket.SOCK_DGRAM: "udp", socket.SOCK_STREAM: "tcp"}


class ActivationError(ValueError):
    """An inherited socket that cannot be used as it was handed over."""


@dataclass(frozen=True)
class InheritedSocket:
    """
    A socket this process inherited.

    @ivar name: its C{FileDescriptorName=} (C{""} when none was given).
    @ivar transport: C{"udp"}, C{"tcp"}, or the socket type's number for any other.
    """

    fd: int
    name: str
    family: int
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"socket{named} (fd {self.fd}, {self.transport.upper()} {host}:{self.port})"


def describe(fd: int, name: str = "") -> InheritedSocket:
    """What the socket C{fd} is; raises L{ActivationError} if it is not an IP socket."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise ActivationError(f"inherited fd {fd} is not a socket: {e.strerror}") from None
    with probe:
        if probe.family not in (socket.AF_INET, socket.AF_INET6):
            raise ActivationError(f"inherited fd {fd} is not an IP socket ({probe.family!r})")
        address = probe.getsockname()
        transport = _TRANSPORTS.get(probe.type, str(int(probe.type)))
        return InheritedSocket(fd, name, int(probe.family), transport, address[0], address[1])


def fromEnvironment(
    environ: MutableMapping[str, str] | None = None, start: int = FIRST_FD
) -> list[InheritedSocket]:
    """
    The sockets systemd passed to this process (none if C{LISTEN_PID} is not our pid).

    The variables are removed, as C{sd_listen_fds(1)} does, so that processes we start do
    not take them for theirs.  A name missing from C{LISTEN_FDNAMES} is C{""};
    systemd's placeholder C{"unknown"} is taken for no name too.

    @param start: the first descriptor (systemd's is always 3; tests choose another).
    """
    if environ is None:
        environ = os.environ
    pid, count = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(variable, None)
    if pid != str(os.getpid()) or not count.isdigit():
        return []
    names += [""] * (int(count) - len(names))
    return [
        describe(fd, "" if name == "unknown" else name)
        for fd, name in zip(range(start, start + int(count)), names, strict=False)
    ]


def assign(sockets: Iterable[InheritedSocket], listeners: Iterable[Listener]) -> None:
    """
    Set each listener's C{inherited} to the descriptor of the socket meant for it (rules
    in the module docstring); raises L{ActivationError} for a socket no listener takes.
    """
    listeners = list(listeners)
    names = {listener.name for listener in listeners}
    for inherited in sockets:
        name, transport = inherited.name, inherited.transport
        base, _, suffix = name.rpartition("-")
        if suffix in ("udp", "tcp") and base in names:
            name = base
            if suffix != transport:
                raise ActivationError(f"{inherited} is named {suffix.upper()}")
        if name in names:
            candidates = [x for x in listeners if x.name == name and x.transport == transport]
            why = f"no {transport.upper()} listener is called {name!r} here"
        else:
            candidates = [
                x
                for x in listeners
                if x.transport == transport and x.port == inherited.port and inherited.port
            ]
            why = f"no service here listens on {transport.upper()} port {inherited.port}"
        free = [x for x in candidates if x.inherited is None]
        if not free:
            raise ActivationError(f"{inherited}: {why}" + (" (twice)" if candidates else ""))
        free[0].inherited = inherited.fd


def inetdSocket(fd: int = 0) -> int:
    """
    Take over inetd's UDP socket on C{fd}: a duplicate of it, which survives twistd's
    daemonizing (that points 0, 1 and 2 at /dev/null).  Descriptors 0, 1 and 2 that are
    sockets (inetd hands the socket as all three) are pointed at /dev/null, so that no log
    line or traceback is ever written into the socket: log with C{twistd --syslog} or
    C{--logfile} then.  Raises L{ActivationError} if C{fd} is not a UDP socket.
    """
    inherited = describe(fd)
    if inherited.transport != "udp":
        raise ActivationError(f"--inetd: {inherited} is not UDP (inetd.conf: dgram udp wait)")
    duplicate = os.dup(fd)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for standard in (0, 1, 2):
            with contextlib.suppress(ActivationError):
                describe(standard)
                os.dup2(null, standard)
    finally:
        os.close(null)
    return duplicate
