"""C{udpsuite discover}: find the responders on the LAN and print each once."""

from __future__ import annotations

from twisted.python import usage

from twisted_udpsuite import ports
from twisted_udpsuite.command import CommandOptions, CommandSpec, Console, resolveHost
from twisted_udpsuite.discovery.protocol import DiscoveredResponder, discover
from twisted_udpsuite.discovery.wire import MAX_DELAY
from twisted_udpsuite.optionvalues import checkPort, numberOption
from twisted_udpsuite.reactors import IReactorNetwork
from twisted_udpsuite.terminal import printable

__all__ = ["COMMAND", "Options", "formatResponder"]


class Options(CommandOptions):
    """Options of C{udpsuite discover}."""

    synopsis = "[--port P] [--timeout S] [--ipv6] [--to HOST ...]"
    longdesc = (
        "Broadcast discovery probes (255.255.255.255 and each interface's directed "
        "broadcast; ff02::1 with --ipv6) and probe this host's loopback (127.0.0.1, ::1) "
        f"on port {ports.RESPONDER}, then print each responder once: address, name, "
        "services. With --to, probe exactly the hosts named and broadcast nothing."
    )
    optParameters = [
        ["timeout", "t", 3.0, "Seconds to listen for answers.", numberOption("timeout", low=0.1)],
        [
            "max-delay",
            None,
            1.0,
            "Responders answer within this many seconds, at random.",
            numberOption("max-delay", low=0, high=MAX_DELAY),
        ],
        ["attempts", None, 3, "Probes to send (1 s, then 2 s apart...).", int],
    ]
    optFlags = [["ipv6", "6", "Also probe the IPv6 all-nodes group ff02::1."]]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["port"] = ports.RESPONDER
        self["to"] = []

    def opt_port(self, value: str) -> None:
        """The responders' port."""
        self["port"] = checkPort(value)
        if not self["port"]:
            raise usage.UsageError("--port: must be 1-65535")

    opt_p = opt_port

    def opt_to(self, value: str) -> None:
        """Probe only this host, by unicast, with no broadcast (repeatable)."""
        self["to"].append(value)

    def postOptions(self) -> None:
        if self["attempts"] < 1:
            raise usage.UsageError("--attempts: must be at least 1")


def formatResponder(responder: DiscoveredResponder) -> str:
    """One line: address, name, services; remote text made safe to print."""
    host, port = responder.address
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = printable(responder.name.encode("utf-8"))
    services = " ".join(printable(str(s).encode("utf-8")) for s in responder.services)
    if responder.truncated:
        services += " ..."
    others = [a for a in responder.addresses if a != responder.address]
    also = " (also " + ", ".join(f"{h}:{p}" for h, p in others) + ")" if others else ""
    return f"{shown}  {name}  {services or '-'}{also}"


async def runDiscover(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    unicast = [await resolveHost(reactor, host) for host in options["to"]]
    result = await discover(
        reactor,
        options["port"],
        timeout=options["timeout"],
        ipv6=options["ipv6"],
        maxDelay=options["max-delay"],
        attempts=options["attempts"],
        unicastTargets=unicast,
        broadcast=not unicast,
        onFound=lambda r: console.say(formatResponder(r)),
    )
    count = len(result)
    console.warn(f"{count} responder{'' if count == 1 else 's'} found")
    return 0 if result else 1


COMMAND = CommandSpec("discover", Options, runDiscover)
