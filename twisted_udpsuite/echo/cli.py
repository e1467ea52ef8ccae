"""C{udpsuite echo HOST:PORT}: ping an echo server and report loss and latency."""

from __future__ import annotations

from twisted.python import usage

from twisted_udpsuite import ports
from twisted_udpsuite.command import (
    CommandOptions,
    CommandSpec,
    Console,
    resolveHost,
    showAddress,
    targetOption,
)
from twisted_udpsuite.echo.client import (
    PROBE_HEADER_SIZE,
    PingCancelled,
    PingReply,
    PingResult,
    ping,
)
from twisted_udpsuite.optionvalues import numberOption
from twisted_udpsuite.reactors import IReactorNetwork


class Options(CommandOptions):
    """Options of C{udpsuite echo}."""

    synopsis = "HOST[:PORT]"
    longdesc = f"Round trips to a UDP echo server, like ping (default port {ports.ECHO})."
    optParameters = [
        ["count", "c", 5, "Probes to send.", numberOption("count", int, low=1)],
        ["interval", "i", 1.0, "Seconds between probes.", numberOption("interval", float, low=0)],
        ["size", "s", 56, "Probe size in bytes.", numberOption("size", int, low=PROBE_HEADER_SIZE)],
        [
            "timeout",
            "W",
            2.0,
            "Seconds to wait for each reply.",
            numberOption("timeout", float, low=0.001),
        ],
    ]
    optFlags = [["quiet", "q", "Print only the summary."]]

    def parseArgs(self, target: str | None = None) -> None:
        if target is None:
            raise usage.UsageError("echo: missing HOST[:PORT]")
        self["target"] = targetOption(target, ports.ECHO)

    def postOptions(self) -> None:
        if self["size"] > 65507:
            raise usage.UsageError("--size: at most 65507 bytes fit in a UDP datagram")


async def runEcho(reactor: IReactorNetwork, options: Options, console: Console) -> int:
    host, port = options["target"]
    address = await resolveHost(reactor, host)
    shown = showAddress(address, port)
    console.say(f"ECHO {shown}: {options['size']} bytes per probe")

    def onReply(reply: PingReply) -> None:
        if not options["quiet"]:
            console.say(
                f"{reply.size} bytes from {shown}: seq={reply.sequence} "
                f"time={reply.rtt * 1000:.3f} ms"
            )

    def onTimeout(sequence: int) -> None:
        if not options["quiet"]:
            console.say(f"no reply from {shown}: seq={sequence}")

    try:
        result = await ping(
            reactor,
            (address, port),
            count=options["count"],
            interval=options["interval"],
            size=options["size"],
            timeout=options["timeout"],
            onReply=onReply,
            onTimeout=onTimeout,
        )
    except PingCancelled as e:
        _summary(console, shown, e.result)  # as ping does on Ctrl-C
        raise
    _summary(console, shown, result)
    return 0 if result.received else 1


def _summary(console: Console, shown: str, result: PingResult) -> None:
    console.say(f"--- {shown} echo statistics ---")
    extra = f", {result.duplicates} duplicates" if result.duplicates else ""
    console.say(
        f"{result.sent} probes sent, {result.received} received{extra}, "
        f"{result.loss:.1%} loss, time {result.elapsed * 1000:.0f} ms"
    )
    rtts = result.rtts()
    if rtts is not None:
        console.say("rtt min/avg/max/mdev = " + "/".join(f"{t * 1000:.3f}" for t in rtts) + " ms")


COMMAND = CommandSpec("echo", Options, runEcho)
